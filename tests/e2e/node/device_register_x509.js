// Registers one X.509 device with the unmodified Node device SDK and prints the outcome as JSON.
// Usage: node device_register_x509.js <transport> ; settings in the environment:
//   OPENDPS_HOST, OPENDPS_ID_SCOPE, OPENDPS_REGISTRATION_ID,
//   OPENDPS_CERT_FILE (PEM: the leaf, then any intermediates), OPENDPS_KEY_FILE (PEM private key),
//   OPENDPS_PAYLOAD (JSON, optional).
'use strict';
const fs = require('fs');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { X509Security } = require('azure-iot-security-x509');

const transports = {
  http: () => new (require('azure-iot-provisioning-device-http').Http)(),
  mqtt: () => new (require('azure-iot-provisioning-device-mqtt').Mqtt)(),
  mqttws: () => new (require('azure-iot-provisioning-device-mqtt').MqttWs)(),
  amqp: () => new (require('azure-iot-provisioning-device-amqp').Amqp)(),
  amqpws: () => new (require('azure-iot-provisioning-device-amqp').AmqpWs)(),
};

const env = process.env;
// The SDK hands {cert, key} to Node's TLS as-is (clients.md §3): a PEM chain in `cert` is sent
// whole, leaf first.
const security = new X509Security(env.OPENDPS_REGISTRATION_ID, {
  cert: fs.readFileSync(env.OPENDPS_CERT_FILE, 'utf-8'),
  key: fs.readFileSync(env.OPENDPS_KEY_FILE, 'utf-8'),
});

const transport = transports[process.argv[2]]();
transport.setTransportOptions({ pollingInterval: 500 });
const client = ProvisioningDeviceClient.create(env.OPENDPS_HOST, env.OPENDPS_ID_SCOPE, transport, security);
if (env.OPENDPS_PAYLOAD) client.setProvisioningPayload(JSON.parse(env.OPENDPS_PAYLOAD));

const timer = setTimeout(() => { process.stdout.write(JSON.stringify({ error: 'timeout' })); process.exit(3); }, 60000);
client.register((err, result) => {
  clearTimeout(timer);
  if (err) {
    const response = err.response || (err.result && err.result.response);
    let body = err.responseBody;
    try { body = typeof body === 'string' ? JSON.parse(body) : body; } catch (e) { /* not JSON */ }
    process.stdout.write(JSON.stringify({
      error: err.constructor ? err.constructor.name : 'Error',
      message: err.message,
      statusCode: response ? response.statusCode : undefined,
      body: body || (err.result ? err.result : undefined),
      // AMQP: a rejected request comes back as the AMQP error itself (condition, description).
      condition: err.condition || (err.amqpError && err.amqpError.condition),
      description: err.description || (err.amqpError && err.amqpError.description),
    }));
    process.exit(0);
  }
  process.stdout.write(JSON.stringify({ registrationState: result }));
  process.exit(0);
});
