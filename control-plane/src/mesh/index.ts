// What main.ts (and the mesh views) need of the mesh CA.

export { certificateSecret, MeshCa, type MeshCaOptions, type Schedule, trustBundleSecret } from './ca';
export { type CaMaterial, type CaSource, loadCaMaterial, meshCaVariables } from './ca-material';
export { caSourceOf, checkMeshCaConfig, createMeshCaFromConfig, meshCaConfigFields } from './config';
export { meshSecretNames, spiffeIdOf, type WorkloadSecrets } from './contract';
export { type IssuedCertificate, issueWorkloadCertificate } from './issue';
export { parseSpiffeId, SpiffeIdError, type WorkloadIdentity } from './spiffe';
