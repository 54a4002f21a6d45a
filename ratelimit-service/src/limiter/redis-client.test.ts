import { describe, expect, it } from 'vitest';
import { classifyRedisError, RedisFault } from './redis-client';

// The messages ioredis and Redis produce (the fault tests meet them against real servers;
// this table pins the ones a test cannot provoke on demand, and the wrapping by a cluster).
describe('classifyRedisError', () => {
  it.each([
    ['Command timed out', 'REDIS_TIMEOUT'],
    ["Stream isn't writeable and enableOfflineQueue options is false", 'REDIS_UNAVAILABLE'],
    ['Connection is closed.', 'REDIS_UNAVAILABLE'],
    ["Cluster isn't ready and enableOfflineQueue options is false", 'REDIS_UNAVAILABLE'],
    ['All sentinels are unreachable. Retrying from scratch after 100ms.', 'REDIS_UNAVAILABLE'],
    ['connect ECONNREFUSED 127.0.0.1:6379', 'REDIS_UNAVAILABLE'],
    ['MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to no.', 'REDIS_UNAVAILABLE'],
    ['LOADING Redis is loading the dataset in memory', 'REDIS_LOADING'],
    ["READONLY You can't write against a read only replica.", 'REDIS_READONLY'],
    ['CLUSTERDOWN The cluster is down', 'REDIS_CLUSTER_DOWN'],
    ['TRYAGAIN Multiple keys request during rehashing of slot', 'REDIS_CLUSTER_DOWN'],
    ['Too many Cluster redirections. Last error: ReplyError: TRYAGAIN Multiple keys request', 'REDIS_CLUSTER_DOWN'],
    ['Too many Cluster redirections. Last error: ReplyError: ASK 866 127.0.0.1:7001', 'REDIS_CLUSTER_DOWN'],
    ['Too many Cluster redirections. Last error: Error: Command timed out', 'REDIS_TIMEOUT'],
    ['WRONGPASS invalid username-password pair or user is disabled.', 'REDIS_AUTH'],
    ['NOAUTH Authentication required.', 'REDIS_AUTH'],
    ["NOPERM User limiter has no permissions to run the 'zadd' command", 'REDIS_AUTH'],
    ["CROSSSLOT Keys in request don't hash to the same slot", 'REDIS_SCRIPT'],
    ['ERR user_script:12: Script attempted to access nonexistent global variable', 'REDIS_SCRIPT'],
  ])('%s → %s', (message, code) => {
    const fault = classifyRedisError(new Error(message));
    expect(fault).toBeInstanceOf(RedisFault);
    expect(fault.code).toBe(code);
    expect(fault.message).toBe(`${code}: ${message}`);
  });

  it('keeps a RedisFault as it is, and reads anything thrown', () => {
    const fault = new RedisFault('REDIS_LOADING', 'x');
    expect(classifyRedisError(fault)).toBe(fault);
    expect(classifyRedisError('a string').code).toBe('REDIS_UNAVAILABLE');
    expect(classifyRedisError(null).code).toBe('REDIS_UNAVAILABLE');
  });
});
