// Drives the unmodified Node TPM device SDK (azure-iot-security-tpm on tss.js) against a software
// TPM reached through the Microsoft simulator protocol (tests/tpmsim/mssim_bridge.py), and prints
// the outcome as one line of JSON.
// Usage:
//   node device_register_tpm.js ek --tpm-port P
//     → {"endorsementKey": <base64 TPM2B_PUBLIC>, "storageRootKey": <same>, "registrationId": <SDK default>}
//     (connecting makes the SDK create the EK 0x81010001 and SRK 0x81000001 if they are missing)
//   node device_register_tpm.js register --transport http|amqp|amqpws --host H --id-scope S
//       --tpm-port P [--registration-id R] [--payload JSON] [--timeout-ms MS (default 60000)]
//     → {"ok": true, "operationStatus": …, "registrationState": …}
//       or {"ok": false, "error": {name, message, …}}
// Exit 0 for either outcome. azure-iot-security-tpm 1.9.3 throws an uncaught TypeError when the
// TPM rejects an activation blob (protocol.md §6.4): that prints {"ok": false, "crashed": true, …}
// and exits 70. NODE_EXTRA_CA_CERTS carries the trust for the server certificate.
'use strict';
const { Tpm } = require('tss.js');
const { TpmSecurityClient } = require('azure-iot-security-tpm');

const transports = {
  http: () => new (require('azure-iot-provisioning-device-http').Http)(),
  amqp: () => new (require('azure-iot-provisioning-device-amqp').Amqp)(),
  amqpws: () => new (require('azure-iot-provisioning-device-amqp').AmqpWs)(),
};
const EXIT_CRASHED = 70;
const EXIT_USAGE = 2;
const EXIT_TIMEOUT = 3;

function parseArgs(argv) {
  const options = { mode: argv[0] };
  for (let i = 1; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined) usage(`bad argument ${argv[i]}`);
    options[argv[i].slice(2)] = argv[i + 1];
  }
  return options;
}

function usage(problem) {
  process.stderr.write(`${problem}\nusage: device_register_tpm.js ek --tpm-port P | register --transport `
    + 'http|amqp|amqpws --host H --id-scope S --tpm-port P [--registration-id R] [--payload JSON] '
    + '[--timeout-ms MS]\n');
  process.exit(EXIT_USAGE);
}

function emit(result, exitCode) {
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(exitCode));
}

function describeError(err) {
  if (!err) return { name: 'Error', message: String(err) };
  const response = err.response || (err.result && err.result.response);
  let body = err.responseBody;
  try { body = typeof body === 'string' ? JSON.parse(body) : body; } catch (e) { /* not JSON */ }
  return {
    name: err.constructor ? err.constructor.name : 'Error',
    message: err.message,
    statusCode: response ? response.statusCode : undefined,
    body: body || (err.result ? err.result : undefined),
    // AMQP: a rejected request comes back as the AMQP error itself (condition, description).
    condition: err.condition || (err.amqpError && err.amqpError.condition),
    description: err.description || (err.amqpError && err.amqpError.description),
    // What the TPM itself answered, when the SDK passes it on.
    tpmResponseCode: err.tpmError ? err.tpmError.responseCode : err.responseCode,
  };
}

const options = parseArgs(process.argv.slice(2));
if (!options['tpm-port']) usage('--tpm-port is required');
// tss.js's simulator device: commands on this port, platform signals on port + 1 (hard-coded).
const tpm = new Tpm(true, '127.0.0.1', Number(options['tpm-port']));
const security = new TpmSecurityClient(options['registration-id'], tpm);

// The SDK crashes the process on some TPM errors and tss.js on a refused connection; say so on
// stdout before dying so the test sees what happened rather than an empty line.
process.on('uncaughtException', (err) => {
  emit({ ok: false, crashed: true, error: { ...describeError(err), stack: err && err.stack } }, EXIT_CRASHED);
});
// The AMQP transport retries a refused connection forever: give up after a while.
const timeoutMs = Number(options['timeout-ms'] || 60000);
setTimeout(() => emit({ ok: false, error: { name: 'Timeout', message: `no outcome in ${timeoutMs} ms` } },
  EXIT_TIMEOUT), timeoutMs);

function printKeys() {
  security.getEndorsementKey((ekErr, endorsementKey) => {
    if (ekErr) return emit({ ok: false, error: describeError(ekErr) }, 0);
    security.getStorageRootKey((srkErr, storageRootKey) => {
      if (srkErr) return emit({ ok: false, error: describeError(srkErr) }, 0);
      security.getRegistrationId((idErr, registrationId) => {
        if (idErr) return emit({ ok: false, error: describeError(idErr) }, 0);
        emit({
          endorsementKey: endorsementKey.toString('base64'),
          storageRootKey: storageRootKey.toString('base64'),
          registrationId,
        }, 0);
      });
    });
  });
}

function register() {
  const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
  const makeTransport = transports[options.transport];
  if (!makeTransport) usage(`unknown transport ${options.transport}`);
  if (!options.host || !options['id-scope']) usage('--host and --id-scope are required');
  const transport = makeTransport();
  transport.setTransportOptions({ pollingInterval: 500 });
  const client = ProvisioningDeviceClient.create(options.host, options['id-scope'], transport, security);
  if (options.payload) client.setProvisioningPayload(JSON.parse(options.payload));
  client.register((err, result) => {
    if (err) return emit({ ok: false, error: describeError(err) }, 0);
    // TpmRegistration hands back the whole RegistrationOperationStatus (operationId, status,
    // registrationState), unlike the symmetric-key and X.509 paths: unwrap it the same way.
    emit({ ok: true, operationStatus: result.status, registrationState: result.registrationState }, 0);
  });
}

if (options.mode === 'ek') printKeys();
else if (options.mode === 'register') register();
else usage(`unknown mode ${options.mode}`);
