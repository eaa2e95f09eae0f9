// A client that knows nothing but the gRPC server reflection service (v1alpha, what grpcurl
// speaks): it lists the services, describes the agent's service, and calls methods with JSON
// input, using only descriptors fetched from the server.
//
// usage: node reflection_test.mjs <address> <tracked-device>
import grpc from '@grpc/grpc-js';
import { GrpcReflection } from 'grpc-js-reflection-client';

const [address, device] = process.argv.slice(2);
if (!address || !device) {
  console.error('usage: node reflection_test.mjs <address> <device>');
  process.exit(2);
}
const credentials = grpc.credentials.createInsecure();
let passed = 0;
let failed = 0;

function check(condition, what, detail = '') {
  if (condition) {
    passed++;
    console.log(`ok   ${what}`);
  } else {
    failed++;
    console.log(`FAIL ${what} ${detail}`);
  }
}

// Builds a client for `service` from the descriptor the server sends back.
async function clientFor(reflection, service) {
  const descriptor = await reflection.getDescriptorBySymbol(service);
  const packageObject = descriptor.getPackageObject({
    keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  });
  const Client = service.split('.').reduce((node, part) => node[part], packageObject);
  return new Client(address, credentials);
}

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + 10000 }, (error, response) =>
      (error ? reject(error) : resolve(response)));
  });
}

const reflection = new GrpcReflection(address, credentials, {}, 'v1alpha');

// list
const services = await reflection.listServices();
console.log(`services: ${services.join(', ')}`);
for (const name of ['cbtagent.v1.CbtAgent', 'grpc.health.v1.Health',
  'grpc.reflection.v1alpha.ServerReflection']) {
  check(services.includes(name), `list shows ${name}`);
}

// describe
const methods = await reflection.listMethods('cbtagent.v1.CbtAgent');
const names = methods.map((m) => m.name).sort();
const expected = ['AttachTracker', 'CreateSnapshot', 'DetachTracker', 'Echo', 'GetCapabilities',
  'GetCbtInfo', 'GetChangedExtents', 'GetSnapshot', 'GetTracker', 'ListSnapshots',
  'ListTrackers', 'MarkDirty', 'ReadCbtMap', 'ReleaseSnapshot', 'WatchSnapshotEvents'];
check(JSON.stringify(names) === JSON.stringify(expected), 'describe lists every RPC',
  JSON.stringify(names));
const streaming = methods.filter((m) => m.definition.responseStream).map((m) => m.name).sort();
check(JSON.stringify(streaming) ===
  JSON.stringify(['GetChangedExtents', 'ReadCbtMap', 'WatchSnapshotEvents']),
'describe marks the server-streaming RPCs', JSON.stringify(streaming));

// call with JSON input
const agent = await clientFor(reflection, 'cbtagent.v1.CbtAgent');
const capabilities = await call(agent, 'GetCapabilities', JSON.parse('{}'));
check(capabilities.backend === 'BACKEND_KIND_BLKSNAP', 'GetCapabilities reports blksnap',
  JSON.stringify(capabilities));
const attached = await call(agent, 'AttachTracker', JSON.parse(`{"device": "${device}"}`));
check(attached.tracker.resolved_path !== '', 'AttachTracker answers with the resolved path',
  JSON.stringify(attached));
const info = await call(agent, 'GetCbtInfo', JSON.parse(`{"device": "${device}"}`));
console.log(`GetCbtInfo: ${JSON.stringify(info)}`);
check(Number(info.block_size) === 65536 && Number(info.block_count) > 0,
  'GetCbtInfo returns the CBT geometry', JSON.stringify(info));
check(/^[0-9a-f-]{36}$/.test(info.generation_id), 'GetCbtInfo returns a generation UUID');
try {
  await call(agent, 'GetCbtInfo', JSON.parse('{"device": "relative/path"}'));
  check(false, 'a bad request fails with INVALID_ARGUMENT');
} catch (error) {
  check(error.code === grpc.status.INVALID_ARGUMENT, 'a bad request fails with INVALID_ARGUMENT',
    `${error.code} ${error.details}`);
}

// the health service, through descriptors fetched by reflection too
const health = await clientFor(reflection, 'grpc.health.v1.Health');
const overall = await call(health, 'Check', JSON.parse('{"service": ""}'));
check(overall.status === 'SERVING', 'grpc.health.v1.Health/Check via reflection is SERVING',
  JSON.stringify(overall));
const api = await call(health, 'Check', JSON.parse('{"service": "cbtagent.v1.CbtAgent"}'));
check(api.status === 'SERVING', 'the API service reports SERVING', JSON.stringify(api));

agent.close();
health.close();
console.log(`reflection: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
