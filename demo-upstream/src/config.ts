import { envLogLevel, envPort, loadConfig } from '@sekisho/service-kit/config';
import { z } from 'zod';

export const demoUpstreamConfigSchema = z.object({
  /** Service name reported in every answer. */
  DEMO_UPSTREAM_NAME: z.string().min(1).default('customer'),
  DEMO_UPSTREAM_HOST: z.string().min(1).default('127.0.0.1'),
  DEMO_UPSTREAM_PORT: envPort(3001),
  LOG_LEVEL: envLogLevel(),
});

export type DemoUpstreamConfig = z.output<typeof demoUpstreamConfigSchema>;

export function loadDemoUpstreamConfig(env: NodeJS.ProcessEnv = process.env): DemoUpstreamConfig {
  return loadConfig(demoUpstreamConfigSchema, env);
}
