// Drives the unmodified Node service client (azure-iot-provisioning-service) through one
// scenario and prints what it observed as one JSON object; the Python tests assert on it.
// Usage: OPENDPS_CONNECTION_STRING=... node service_scenarios.js <scenario> [prefix]
'use strict';
const fs = require('fs');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');

const client = ProvisioningServiceClient.fromConnectionString(process.env.OPENDPS_CONNECTION_STRING);
const scenario = process.argv[2];
const prefix = process.argv[3] || 'node';
const out = {};

function statusOf(err) {
  return err && err.response ? err.response.statusCode : (err ? String(err) : null);
}

async function expectError(promise) {
  try {
    await promise;
    return { ok: true };
  } catch (err) {
    return { status: statusOf(err), body: err.responseBody ? JSON.parse(err.responseBody) : null };
  }
}

// runBulkEnrollmentOperation's promise form never settles (clients.md §4a): use the callback.
function bulk(op) {
  return new Promise((resolve, reject) => {
    client.runBulkEnrollmentOperation(op, (err, body, response) => {
      if (err) reject(err); else resolve({ body, status: response.statusCode });
    });
  });
}

async function crud(kind) {
  const isGroup = kind === 'group';
  const id = `${prefix}-${kind}-sym`;
  const base = isGroup ? { enrollmentGroupId: id } : { registrationId: id, deviceId: `${id}-device` };
  const enrollment = Object.assign(base, {
    attestation: { type: 'symmetricKey', symmetricKey: {} },
    initialTwin: { tags: { site: 'lab' }, properties: { desired: { interval: 30 } } },
    provisioningStatus: 'enabled',
    capabilities: { iotEdge: false },
  });
  const put = isGroup ? (e) => client.createOrUpdateEnrollmentGroup(e) : (e) => client.createOrUpdateIndividualEnrollment(e);
  const get = isGroup ? (i) => client.getEnrollmentGroup(i) : (i) => client.getIndividualEnrollment(i);
  const del = isGroup ? (i, e) => client.deleteEnrollmentGroup(i, e) : (i, e) => client.deleteIndividualEnrollment(i, e);
  const mech = isGroup ? (i) => client.getEnrollmentGroupAttestationMechanism(i) : (i) => client.getIndividualEnrollmentAttestationMechanism(i);

  const created = await put(enrollment);
  out.createStatus = created.httpResponse.statusCode;
  out.created = created.responseBody;
  const fetched = await get(id);
  out.fetched = fetched.responseBody;
  const attestation = await mech(id);
  out.attestationMechanism = attestation.responseBody;
  const updated = await put(Object.assign({}, created.responseBody, { provisioningStatus: 'disabled' }));
  out.updated = updated.responseBody;
  out.staleUpdate = await expectError(put(Object.assign({}, created.responseBody, { provisioningStatus: 'enabled' })));
  out.staleDelete = await expectError(del(id, created.responseBody.etag));
  await del(id, updated.responseBody.etag);
  out.afterDelete = await expectError(get(id));
}

async function x509(kind) {
  const pem = fs.readFileSync(process.env.OPENDPS_CERT_PEM_FILE, 'utf8');
  const id = `${prefix}-${kind}-x509`;
  if (kind === 'group') {
    const res = await client.createOrUpdateEnrollmentGroup({
      enrollmentGroupId: id,
      attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: pem } } } },
    });
    out.created = res.responseBody;
    out.fetched = (await client.getEnrollmentGroup(id)).responseBody;
    await client.deleteEnrollmentGroup(id);
  } else {
    const res = await client.createOrUpdateIndividualEnrollment({
      registrationId: id,
      attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: pem } } } },
    });
    out.created = res.responseBody;
    out.fetched = (await client.getIndividualEnrollment(id)).responseBody;
    await client.deleteIndividualEnrollment(id);
  }
}

async function query() {
  const ids = [1, 2, 3, 4, 5].map((n) => `${prefix}-query-${n}`);
  for (const id of ids) {
    await client.createOrUpdateIndividualEnrollment({ registrationId: id, attestation: { type: 'symmetricKey', symmetricKey: {} } });
  }
  const q = client.createIndividualEnrollmentQuery({ query: '*' }, 2);
  const pages = [];
  let token;
  // The promise form of next() drops the stored token (clients.md §4a): pass it explicitly.
  do {
    const page = await q.next(token);
    pages.push(page.responseBody.map((e) => e.registrationId));
    token = q.continuationToken;
  } while (q.hasMoreResults && pages.length < 50);
  out.pages = pages;
  for (const id of ids) await client.deleteIndividualEnrollment(id);
}

async function bulkScenario() {
  const ids = [1, 2, 3].map((n) => `${prefix}-bulk-${n}`);
  const enrollments = ids.map((id) => ({ registrationId: id, attestation: { type: 'symmetricKey', symmetricKey: {} } }));
  out.create = await bulk({ mode: 'create', enrollments });
  out.createAgain = await bulk({ mode: 'create', enrollments });
  out.fetched = (await client.getIndividualEnrollment(ids[0])).responseBody;
  out.delete = await bulk({ mode: 'delete', enrollments });
  out.afterDelete = await expectError(client.getIndividualEnrollment(ids[0]));
}

async function registrationMissing() {
  out.missing = await expectError(client.getDeviceRegistrationState(`${prefix}-never-registered`));
  const q = client.createEnrollmentGroupDeviceRegistrationStateQuery({ query: '*' }, `${prefix}-no-such-group`, 10);
  const page = await q.next();
  out.groupQuery = page.responseBody;
}

const scenarios = {
  'individual-symmetric': () => crud('individual'),
  'group-symmetric': () => crud('group'),
  'individual-x509': () => x509('individual'),
  'group-x509': () => x509('group'),
  query,
  bulk: bulkScenario,
  'registration-missing': registrationMissing,
};

scenarios[scenario]().then(
  () => { process.stdout.write(JSON.stringify(out)); process.exit(0); },
  (err) => {
    process.stdout.write(JSON.stringify({ error: String(err), status: statusOf(err), partial: out }));
    process.exit(1);
  },
);
