// `npm run admin -- <command> <uid> [value]`: changes Sekisho's account state in Redis and
// publishes the change, so every ext-authz replica applies it within a second. Without
// connection options it acts on the Redis of ext-authz's own EXT_AUTHZ_REDIS_* variables when
// they are set (Sentinel, TLS, ACL users, read as the service reads them),
// else on the stack `npm start` is running (found through .cache/local-stack.json).
// Exit codes: 0 done, 1 failed, 2 usage.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { localStackFile } from '@sekisho/devstack/paths';
import { type RedisTopology, redisNodeOptions, redisSettingsOf } from '@sekisho/service-kit/redis-topology';
import { defaultThreatKeyPrefix } from '@sekisho/service-kit/threat-contract';
import { Redis, type RedisOptions } from 'ioredis';
import {
  defaultKeyPrefix,
  readAccountState,
  recordFirebaseRevocation,
  writeAccountChange,
} from '../accounts/redis-store';
import { type AccountChange, type AccountField, isValidUid, parseFieldValue } from '../accounts/state';
import { resolveExtAuthzRedis } from '../config';
import { removeBlock, setTrustedDevice } from '../threats/block-store';
import { applyInFirebase, type Claims, firebaseTarget } from './firebase';

const usage = `usage: npm run admin -- <command> <uid> [value] [options]

commands:
  revoke <uid>                  refuse every token of <uid> signed in before now (Firebase's revokeRefreshTokens)
  disable <uid>                 refuse every request of <uid> with 401 USER_INACTIVE
  enable <uid>                  undo disable (a revocation stays)
  set-group <uid> <group>       use <group> in place of the token's group claim
  set-customer-id <uid> <id>    use <id> in place of the token's customer id claim
  show <uid>                    print what Sekisho holds for <uid>
  unblock-ip <ip>               lift the threat detector's block of <ip> (IP_BLOCKED)
  unblock-user <uid>            lift the threat detector's block (USER_BLOCKED), aggressive limit and
                                additional-authentication state (ADDITIONAL_AUTH_REQUIRED) of <uid>
  trust-device <uid> <device-id>    let requests of <uid> naming <device-id> in the x-device-id header pass
                                an additional-authentication state (kept as its SHA-256 only)
  untrust-device <uid> <device-id>  undo trust-device
  (set-group and set-customer-id with --clear remove the override)

options:
  --redis-url <url>    the deployment's Redis (default: EXT_AUTHZ_REDIS_URL and the other
                       EXT_AUTHZ_REDIS_* variables when set, standalone or sentinel as
                       ext-authz reads them; else the Redis of the running \`npm start\`)
  --key-prefix <p>     the keys' prefix (default: the local stack's, else ${defaultKeyPrefix})
  --threats-key-prefix <p>  the threat blocks' prefix (default: the local stack's, else ${defaultThreatKeyPrefix})
  --clear              with set-group / set-customer-id: remove the override
  --firebase-project <id>     the Firebase project (default GOOGLE_CLOUD_PROJECT or GCLOUD_PROJECT)
  --group-claim <name>        the group claim's name in Firebase (default: the local stack's definition)
  --customer-id-claim <name>  the customer id claim's name (default: the local stack's definition)
  --help               this text

Firebase: with FIREBASE_AUTH_EMULATOR_HOST or GOOGLE_APPLICATION_CREDENTIALS set, or acting
on an \`npm start\` that runs the Auth emulator (SEKISHO_AUTH_EMULATOR=true), the same change is
made in Firebase through firebase-admin (revokeRefreshTokens, updateUser({disabled}),
setCustomUserClaims); without them Sekisho's state alone is changed, and it says so.`;

class UsageError extends Error {}
class Failure extends Error {}

interface Target extends Partial<Claims> {
  redisUrl: string;
  /** From the EXT_AUTHZ_REDIS_* variables (else the URL alone is used). */
  topology?: RedisTopology;
  keyPrefix: string;
  /** The local stack's threat key prefix, when it runs threat detection. */
  threatsKeyPrefix?: string;
  /** Where the URL came from, for the messages. */
  source: string;
  /** The local stack's Auth emulator (npm start with SEKISHO_AUTH_EMULATOR), and its project. */
  authEmulator?: { host: string; projectId: string | undefined };
}

/** Never print a password that a URL carries. */
const shown = (url: string) => url.replace(/\/\/[^/@\s]*@/, '//***@');

function findLocalStack(): Target {
  const file = localStackFile();
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new Failure(
      `no running local stack found (${file} is missing): start one with \`npm start\`, or pass --redis-url redis://host:port`,
    );
  }
  let info: {
    redisUrl?: unknown;
    keyPrefix?: unknown;
    threatsKeyPrefix?: unknown;
    pid?: unknown;
    groupClaim?: unknown;
    customerIdClaim?: unknown;
    authEmulatorHost?: unknown;
    projectId?: unknown;
  };
  try {
    info = JSON.parse(text);
  } catch {
    throw new Failure(`${file} is not JSON: remove it, or pass --redis-url`);
  }
  if (typeof info.redisUrl !== 'string' || typeof info.pid !== 'number') {
    throw new Failure(`${file} has no redisUrl and pid: remove it, or pass --redis-url`);
  }
  if (!processAlive(info.pid)) {
    throw new Failure(
      `the local stack that wrote ${file} (pid ${info.pid}) is not running: start one with \`npm start\`, or pass --redis-url`,
    );
  }
  return {
    redisUrl: info.redisUrl,
    keyPrefix: typeof info.keyPrefix === 'string' ? info.keyPrefix : defaultKeyPrefix,
    ...(typeof info.threatsKeyPrefix === 'string' ? { threatsKeyPrefix: info.threatsKeyPrefix } : {}),
    source: `the local stack (pid ${info.pid})`,
    ...(typeof info.groupClaim === 'string' ? { groupClaim: info.groupClaim } : {}),
    ...(typeof info.customerIdClaim === 'string' ? { customerIdClaim: info.customerIdClaim } : {}),
    ...(typeof info.authEmulatorHost === 'string'
      ? {
          authEmulator: {
            host: info.authEmulatorHost,
            projectId: typeof info.projectId === 'string' ? info.projectId : undefined,
          },
        }
      : {}),
  };
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: alive, owned by someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

interface Command {
  name: string;
  uid: string;
  change?: Omit<AccountChange, 'version'>;
  /** unblock-ip / unblock-user: the block members to lift. */
  unblock?: string[];
  /** trust-device / untrust-device. */
  device?: { id: string; trusted: boolean };
}

interface Options {
  redisUrl?: string;
  keyPrefix?: string;
  threatsKeyPrefix?: string;
  firebaseProject?: string;
  groupClaim?: string;
  customerIdClaim?: string;
}

function parseCommand(argv: string[]): { command: Command; options: Options } | 'help' {
  let parsed: ReturnType<typeof parse>;
  function parse() {
    return parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        'redis-url': { type: 'string' },
        'key-prefix': { type: 'string' },
        'threats-key-prefix': { type: 'string' },
        clear: { type: 'boolean', default: false },
        'firebase-project': { type: 'string' },
        'group-claim': { type: 'string' },
        'customer-id-claim': { type: 'string' },
        help: { type: 'boolean', default: false },
      },
    });
  }
  try {
    parsed = parse();
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
  const { values, positionals } = parsed;
  if (values.help) return 'help';
  const [name, uid, value, ...rest] = positionals;
  if (name === undefined) throw new UsageError('no command given');
  if (uid === undefined) throw new UsageError(`${name}: a uid is required`);
  if (!isValidUid(uid)) throw new UsageError(`${name}: the uid must be 1-128 characters without control characters`);
  if (rest.length > 0) throw new UsageError(`${name}: unexpected arguments ${JSON.stringify(rest)}`);
  const redisUrl = values['redis-url'];
  if (redisUrl !== undefined && !/^rediss?:\/\/./.test(redisUrl)) {
    throw new UsageError(`--redis-url must be redis://host:port or rediss://…, got ${JSON.stringify(shown(redisUrl))}`);
  }
  const keyPrefix = values['key-prefix'];
  if (keyPrefix !== undefined && !/^[A-Za-z0-9:_.-]{1,100}$/.test(keyPrefix)) {
    throw new UsageError('--key-prefix must be 1-100 of A-Z a-z 0-9 : _ . -');
  }
  const threatsKeyPrefix = values['threats-key-prefix'];
  if (threatsKeyPrefix !== undefined && !/^[A-Za-z0-9:_.-]{1,100}$/.test(threatsKeyPrefix)) {
    throw new UsageError('--threats-key-prefix must be 1-100 of A-Z a-z 0-9 : _ . -');
  }
  const claimName = (option: string, name: string | undefined) => {
    if (name !== undefined && !/^[A-Za-z_][A-Za-z0-9_]{0,99}$/.test(name)) {
      throw new UsageError(`${option} must be a claim name (letters, digits, _), got ${JSON.stringify(name)}`);
    }
    return name;
  };
  const groupClaim = claimName('--group-claim', values['group-claim']);
  const customerIdClaim = claimName('--customer-id-claim', values['customer-id-claim']);
  const firebaseProject = values['firebase-project'];
  const options: Options = {
    ...(redisUrl ? { redisUrl } : {}),
    ...(keyPrefix ? { keyPrefix } : {}),
    ...(threatsKeyPrefix ? { threatsKeyPrefix } : {}),
    ...(firebaseProject ? { firebaseProject } : {}),
    ...(groupClaim ? { groupClaim } : {}),
    ...(customerIdClaim ? { customerIdClaim } : {}),
  };
  const noValue = () => {
    if (value !== undefined) throw new UsageError(`${name} takes no value (got ${JSON.stringify(value)})`);
    if (values.clear) throw new UsageError(`--clear is for set-group and set-customer-id`);
  };
  const override = (field: AccountField): Command => {
    if (values.clear) {
      if (value !== undefined) throw new UsageError(`${name} --clear takes no value`);
      return { name, uid, change: { uid, field, value: null } };
    }
    if (value === undefined) throw new UsageError(`${name}: a value is required (or --clear)`);
    if (typeof parseFieldValue(field, value) === 'symbol') {
      throw new UsageError(`${name}: the value must be 1-256 characters`);
    }
    return { name, uid, change: { uid, field, value } };
  };
  switch (name) {
    case 'revoke':
      noValue();
      // Firebase's tokensValidAfterTime: whole seconds, now.
      return {
        command: { name, uid, change: { uid, field: 'validAfter', value: Math.floor(Date.now() / 1000) } },
        options,
      };
    case 'disable':
      noValue();
      return { command: { name, uid, change: { uid, field: 'disabled', value: true } }, options };
    case 'enable':
      noValue();
      return { command: { name, uid, change: { uid, field: 'disabled', value: null } }, options };
    case 'set-group':
      return { command: override('group'), options };
    case 'set-customer-id':
      return { command: override('customerId'), options };
    case 'show':
      noValue();
      return { command: { name, uid }, options };
    case 'unblock-ip':
      noValue();
      if (isIP(uid) === 0) throw new UsageError(`unblock-ip: ${JSON.stringify(uid)} is not an IP address`);
      return { command: { name, uid, unblock: [`ip:${uid}`] }, options };
    case 'unblock-user':
      noValue();
      return { command: { name, uid, unblock: [`user:${uid}`, `limit:${uid}`, `auth:${uid}`] }, options };
    case 'trust-device':
    case 'untrust-device':
      if (values.clear) throw new UsageError(`--clear is for set-group and set-customer-id`);
      if (value === undefined || !/^[\x21-\x7e]{16,256}$/.test(value))
        throw new UsageError(`${name}: the device id must be 16-256 visible ASCII characters`);
      return { command: { name, uid, device: { id: value, trusted: name === 'trust-device' } }, options };
    default:
      throw new UsageError(`unknown command ${JSON.stringify(name)}`);
  }
}

function describe(command: Command, version: number): string {
  const change = command.change;
  if (!change) return '';
  const at = ` (state version ${version})`;
  switch (command.name) {
    case 'revoke':
      return `revoked the sessions of ${command.uid}: tokens signed in before ${new Date(Number(change.value) * 1000).toISOString()} are refused with TOKEN_REVOKED${at}`;
    case 'disable':
      return `disabled ${command.uid}: every request is refused with USER_INACTIVE${at}`;
    case 'enable':
      return `enabled ${command.uid}${at}`;
    default:
      return change.value === null
        ? `removed the ${change.field} override of ${command.uid}${at}`
        : `set the ${change.field} of ${command.uid} to ${JSON.stringify(change.value)}${at}`;
  }
}

async function run(argv: string[]): Promise<number> {
  const parsed = parseCommand(argv);
  if (parsed === 'help') {
    console.log(usage);
    return 0;
  }
  const { command, options } = parsed;
  const fromEnv = process.env.EXT_AUTHZ_REDIS_URL;
  const target: Target = options.redisUrl
    ? { redisUrl: options.redisUrl, keyPrefix: options.keyPrefix ?? defaultKeyPrefix, source: '--redis-url' }
    : fromEnv
      ? {
          redisUrl: fromEnv,
          // ConfigError (exit 1) names the variable, as ext-authz would at start.
          topology: resolveExtAuthzRedis(redisSettingsOf(process.env, 'EXT_AUTHZ', fromEnv)),
          keyPrefix: options.keyPrefix ?? process.env.EXT_AUTHZ_ACCOUNTS_KEY_PREFIX ?? defaultKeyPrefix,
          ...(process.env.EXT_AUTHZ_THREATS_KEY_PREFIX
            ? { threatsKeyPrefix: process.env.EXT_AUTHZ_THREATS_KEY_PREFIX }
            : {}),
          source: 'EXT_AUTHZ_REDIS_URL',
        }
      : { ...findLocalStack(), ...(options.keyPrefix ? { keyPrefix: options.keyPrefix } : {}) };
  const once: RedisOptions = {
    lazyConnect: true,
    connectTimeout: 3_000,
    commandTimeout: 5_000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
    sentinelRetryStrategy: () => null,
  };
  const redis = target.topology
    ? new Redis({ ...(redisNodeOptions(target.topology) as RedisOptions), ...once })
    : new Redis(target.redisUrl, once);
  redis.on('error', () => {}); // reported through the command's own rejection
  try {
    try {
      await redis.connect();
    } catch (error) {
      throw new Failure(
        `cannot reach Redis at ${shown(target.redisUrl)} (from ${target.source}): ${error instanceof Error ? error.message : String(error)}`,
      );
    }
    if (command.unblock) {
      const prefix = options.threatsKeyPrefix ?? target.threatsKeyPrefix ?? defaultThreatKeyPrefix;
      const lifted: string[] = [];
      for (const member of command.unblock) if (await removeBlock(redis, prefix, member)) lifted.push(member);
      console.log(
        lifted.length > 0
          ? `lifted ${lifted.join(', ')}: every ext-authz replica serves ${command.uid} again within a second, in ${shown(target.redisUrl)} (${target.source})`
          : `${command.uid} has no threat block in ${shown(target.redisUrl)} (${target.source}); nothing changed`,
      );
      return 0;
    }
    if (command.device) {
      const prefix = options.threatsKeyPrefix ?? target.threatsKeyPrefix ?? defaultThreatKeyPrefix;
      const { stateUpdated } = await setTrustedDevice(
        redis,
        prefix,
        command.uid,
        command.device.id,
        command.device.trusted,
      );
      console.log(
        `${command.device.trusted ? 'trusted' : 'no longer trusting'} a device of ${command.uid}${stateUpdated ? ' (its additional-authentication state in force was updated)' : ''}, in ${shown(target.redisUrl)} (${target.source})`,
      );
      return 0;
    }
    if (!command.change) {
      const state = await readAccountState(redis, target.keyPrefix);
      console.log(JSON.stringify({ uid: command.uid, version: state.version, ...state.table.get(command.uid) }));
      return 0;
    }
    // Sekisho first: it is what refuses the requests, whatever Firebase answers.
    const version = await writeAccountChange(redis, target.keyPrefix, command.change);
    console.log(`${describe(command, version)}, in ${shown(target.redisUrl)} (${target.source})`);
    const firebase = firebaseTarget(process.env, options.firebaseProject, target.authEmulator);
    if (!firebase) {
      console.log("Firebase not configured: updated Sekisho's state only");
      if (command.change.field === 'validAfter') {
        console.log(
          "This revocation is never pruned: Firebase still refreshes the user's sessions, and only Sekisho refuses their tokens.",
        );
      }
      return 0;
    }
    try {
      const done = await applyInFirebase(firebase, command.change, {
        groupClaim: options.groupClaim ?? target.groupClaim,
        customerIdClaim: options.customerIdClaim ?? target.customerIdClaim,
      });
      console.log(`Firebase (${firebase.via}): ${done}`);
    } catch (error) {
      throw new Failure(
        `updated Sekisho's state, but Firebase (${firebase.via}) refused the change: ${error instanceof Error ? error.message : String(error)}`,
      );
    }
    if (command.change.field === 'validAfter') {
      // Only now may ext-authz prune it: no token signed in before it is issued from here on.
      const validAfter = Number(command.change.value);
      try {
        await recordFirebaseRevocation(redis, target.keyPrefix, {
          uid: command.uid,
          validAfter,
          firebaseSecond: Math.ceil(Date.now() / 1000),
        });
        console.log(
          "Firebase revoked it too, so ext-authz removes it from Sekisho's state once every earlier token has expired (EXT_AUTHZ_REVOCATION_RETENTION, 2h by default)",
        );
      } catch (error) {
        // The revocation stands; it is only never pruned.
        console.error(
          `admin: could not mark the revocation as made in Firebase (${error instanceof Error ? error.message : String(error)}); it is never pruned from Sekisho's state`,
        );
      }
    }
    return 0;
  } finally {
    redis.disconnect();
  }
}

try {
  process.exitCode = await run(process.argv.slice(2));
} catch (error) {
  if (error instanceof UsageError) {
    console.error(`admin: ${error.message}\n\n${usage}`);
    process.exitCode = 2;
  } else {
    console.error(`admin: ${error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 1;
  }
}
