/**
 * @module config/flags
 * Command-line flags after the subcommand, with upstream kube-proxy (pflag) syntax: `--flag=value`
 * and `--flag value`; booleans as `--flag` or `--flag=true|false` (never `--flag false`);
 * `-v 4`, `-v4`, `--v=4`. Values are returned as raw text; `load.ts` validates them.
 */
import { parseArgs } from 'node:util';

/** Flags only some subcommands take; the CLI says which ones a subcommand accepts. */
export type CommandFlag =
  | 'manifests'
  | 'format'
  | 'ip-family'
  // explain
  | 'src'
  | 'dst'
  | 'proto'
  | 'from'
  | 'local-addresses'
  | 'packets'
  | 'output'
  // diff
  | 'against'
  // run
  | 'audit-log'
  | 'audit-log-max-size'
  // upstream's own invocation (no subcommand): the daemon, or one of these then exit
  | 'cleanup'
  | 'init-only'
  | 'write-config-to'
  // trace
  | 'service'
  | 'count'
  | 'timeout';

export const COMMAND_FLAGS: readonly CommandFlag[] = [
  'manifests',
  'format',
  'ip-family',
  'src',
  'dst',
  'proto',
  'from',
  'local-addresses',
  'packets',
  'output',
  'against',
  'audit-log',
  'audit-log-max-size',
  'cleanup',
  'init-only',
  'write-config-to',
  'service',
  'count',
  'timeout',
];

const STRING_FLAGS = [
  'config',
  'proxy-mode',
  'hostname-override',
  'kubeconfig',
  'master',
  'cluster-cidr',
  'detect-local-mode',
  'pod-bridge-interface',
  'pod-interface-name-prefix',
  'nodeport-addresses',
  'healthz-bind-address',
  'metrics-bind-address',
  'iptables-sync-period',
  'iptables-min-sync-period',
  'iptables-masquerade-bit',
  'iptables-flavor',
  'kernel-tool-timeout',
  'ipvs-scheduler',
  'ipvs-sync-period',
  'ipvs-min-sync-period',
  'ipvs-exclude-cidrs',
  'ipvs-tcp-timeout',
  'ipvs-tcpfin-timeout',
  'ipvs-udp-timeout',
  'v',
  'logging-format',
  'log-flush-frequency',
  'vmodule',
  'feature-gates',
  'bind-address',
  'healthz-port',
  'metrics-port',
  'oom-score-adj',
  'conntrack-max-per-core',
  'conntrack-min',
  'conntrack-tcp-timeout-established',
  'conntrack-tcp-timeout-close-wait',
  'conntrack-udp-timeout',
  'conntrack-udp-timeout-stream',
  'config-sync-period',
  'kube-api-content-type',
  'kube-api-qps',
  'kube-api-burst',
  'show-hidden-metrics-for-version',
  'write-config-to',
  'skip-node-setup',
  'manifests',
  'format',
  'ip-family',
  'src',
  'dst',
  'proto',
  'from',
  'local-addresses',
  'packets',
  'output',
  'against',
  'audit-log',
  'audit-log-max-size',
  'service',
  'count',
  'timeout',
] as const;

const BOOLEAN_FLAGS = [
  'masquerade-all',
  'iptables-localhost-nodeports',
  'ipvs-strict-arp',
  'bind-address-hard-fail',
  'conntrack-tcp-be-liberal',
  'profiling',
  'cleanup',
  'init-only',
] as const;

export type StringFlag = (typeof STRING_FLAGS)[number];
export type BooleanFlag = (typeof BOOLEAN_FLAGS)[number];

export interface FlagValues {
  /** Explicitly given string flags (last occurrence wins, like pflag). */
  readonly strings: ReadonlyMap<StringFlag, string>;
  readonly booleans: ReadonlyMap<BooleanFlag, boolean>;
}

function isStringFlag(name: string): name is StringFlag {
  return (STRING_FLAGS as readonly string[]).includes(name);
}
function isBooleanFlag(name: string): name is BooleanFlag {
  return (BOOLEAN_FLAGS as readonly string[]).includes(name);
}
function isCommandFlag(name: string): name is CommandFlag {
  return (COMMAND_FLAGS as readonly string[]).includes(name);
}

/** Go `strconv.ParseBool`. */
export function parseGoBool(text: string): boolean | undefined {
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(text)) return true;
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(text)) return false;
  return undefined;
}

/** Parses `argv`, appending one message per problem (unknown flag, missing value, stray argument). */
export function parseFlags(argv: readonly string[], allowed: readonly CommandFlag[], problems: string[]): FlagValues {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {};
  for (const name of STRING_FLAGS) options[name] = { type: 'string' };
  for (const name of BOOLEAN_FLAGS) options[name] = { type: 'boolean' };
  options['v'] = { type: 'string', short: 'v' };

  // Non-strict so that every problem is collected instead of stopping at the first one.
  const { tokens } = parseArgs({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });
  const strings = new Map<StringFlag, string>();
  const booleans = new Map<BooleanFlag, boolean>();
  let unknownAt = -2;

  for (const token of tokens) {
    if (token.kind === 'option-terminator') continue;
    if (token.kind === 'positional') {
      // The word after an unknown flag is most likely its value: one message is enough.
      if (token.index !== unknownAt + 1) problems.push(`unexpected argument ${JSON.stringify(token.value)}`);
      continue;
    }
    const { name, rawName } = token;
    if (isCommandFlag(name) && !allowed.includes(name)) {
      problems.push(`${rawName}: flag not accepted by this command`);
      if (token.inlineValue !== true) unknownAt = token.index;
      continue;
    }
    if (isStringFlag(name)) {
      if (token.value === undefined) problems.push(`${rawName}: flag needs an argument`);
      else strings.set(name, token.value);
      continue;
    }
    if (isBooleanFlag(name)) {
      if (token.value === undefined) {
        booleans.set(name, true);
        continue;
      }
      const b = parseGoBool(token.value);
      if (b === undefined)
        problems.push(
          `--${name}: invalid boolean ${JSON.stringify(token.value)} (use --${name} or --${name}=true|false)`,
        );
      else booleans.set(name, b);
      continue;
    }
    problems.push(`unknown flag ${rawName}`);
    if (token.inlineValue !== true) unknownAt = token.index;
  }
  return { strings, booleans };
}
