// Registers one device with the unmodified Node device SDK and prints the outcome as JSON.
// Usage: node device_register.js <transport> ; settings in the environment:
//   OPENDPS_HOST, OPENDPS_ID_SCOPE, OPENDPS_REGISTRATION_ID, OPENDPS_DEVICE_KEY,
//   OPENDPS_PAYLOAD (JSON, optional), OPENDPS_EXPIRED_TOKEN=1 (sign a token that expired an hour ago).
'use strict';
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { SharedAccessSignature } = require('azure-iot-common');

const transports = {
  http: () => new (require('azure-iot-provisioning-device-http').Http)(),
  mqtt: () => new (require('azure-iot-provisioning-device-mqtt').Mqtt)(),
  mqttws: () => new (require('azure-iot-provisioning-device-mqtt').MqttWs)(),
  amqp: () => new (require('azure-iot-provisioning-device-amqp').Amqp)(),
  amqpws: () => new (require('azure-iot-provisioning-device-amqp').AmqpWs)(),
};

const env = process.env;
const security = new SymmetricKeySecurityClient(env.OPENDPS_REGISTRATION_ID, env.OPENDPS_DEVICE_KEY);
if (env.OPENDPS_EXPIRED_TOKEN === '1') {
  // The same token the SDK builds (raw sr, skn=registration), but from a device whose clock
  // is an hour behind: it expired before it was sent.
  security.createSharedAccessSignature = (idScope, callback) => {
    const expiry = Math.floor(Date.now() / 1000) - 3600;
    const sas = SharedAccessSignature.create(
      `${idScope}/registrations/${env.OPENDPS_REGISTRATION_ID}`, 'registration', env.OPENDPS_DEVICE_KEY, expiry);
    if (callback) { callback(null, sas); return undefined; }
    return Promise.resolve(sas);
  };
}

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
