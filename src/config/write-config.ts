/**
 * @module config/write-config
 * `--write-config-to FILE`: the effective configuration as a KubeProxyConfiguration, in v1alpha1
 * or v1alpha2 (the version of the `--config` file; v1alpha1 without one, as upstream writes).
 * Every field is written with its effective value, so the file loads back to the same config.
 */
import { stringify } from 'yaml';
import { cidrText } from '../model/ip.ts';
import {
  KUBE_PROXY_API_VERSION,
  KUBE_PROXY_API_VERSION_V1ALPHA2,
  KUBE_PROXY_KIND,
  type ConfigVersion,
} from './file.ts';
import type { Loaded } from './load.ts';
import type { ProxyConfig } from './proxy-config.ts';

/** Go's time.Duration.String() for whole milliseconds: 0s, 1s, 1m30s, 24h0m0s, 500ms. */
export function formatGoDuration(ms: number): string {
  if (ms === 0) return '0s';
  if (ms < 1000) return `${ms}ms`;
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const s = (ms % 60_000) / 1000;
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

/** The YAML text, or a message saying why the configuration cannot be written in `version`. */
export function effectiveConfigYaml(loaded: Loaded, version: ConfigVersion): { text: string } | { error: string } {
  const c = loaded.config;
  const d = formatGoDuration;
  const ct = c.nodeSetup.conntrack;
  const conntrack = {
    maxPerCore: ct.maxPerCore,
    min: ct.min,
    tcpBeLiberal: ct.tcpBeLiberal,
    tcpCloseWaitTimeout: d(ct.tcpCloseWaitTimeoutSeconds * 1000),
    tcpEstablishedTimeout: d(ct.tcpEstablishedTimeoutSeconds * 1000),
    udpStreamTimeout: d(ct.udpStreamTimeoutSeconds * 1000),
    udpTimeout: d(ct.udpTimeoutSeconds * 1000),
  };
  const common = {
    kind: KUBE_PROXY_KIND,
    bindAddressHardFail: c.bindAddressHardFail,
    clientConnection: {
      acceptContentTypes: '',
      burst: 10,
      contentType: 'application/vnd.kubernetes.protobuf',
      kubeconfig: loaded.kubeconfig ?? '',
      qps: 5,
    },
    configSyncPeriod: '15m0s',
    detectLocalMode: c.detectLocal.mode,
    enableProfiling: false,
    ...(Object.keys(loaded.featureGates).length > 0 ? { featureGates: loaded.featureGates } : {}),
    hostnameOverride: c.nodeName,
    logging: { format: c.loggingFormat, verbosity: c.verbosity },
    mode: c.mode,
    nodePortAddresses: nodePortAddresses(c),
  };
  const detectLocal = {
    bridgeInterface: c.detectLocal.mode === 'BridgeInterface' ? c.detectLocal.bridgeInterface : '',
    interfaceNamePrefix: c.detectLocal.mode === 'InterfaceNamePrefix' ? c.detectLocal.interfaceNamePrefix : '',
  };
  const ipvs = {
    excludeCIDRs: c.ipvs.excludeCIDRs.map(cidrText),
    scheduler: c.ipvs.scheduler,
    strictARP: c.ipvs.strictARP,
    tcpFinTimeout: d(c.ipvs.tcpFinTimeoutSeconds * 1000),
    tcpTimeout: d(c.ipvs.tcpTimeoutSeconds * 1000),
    udpTimeout: d(c.ipvs.udpTimeoutSeconds * 1000),
  };
  const sync = { minSyncPeriod: d(c.minSyncPeriodMs), syncPeriod: d(c.syncPeriodMs) };
  const masquerade = { masqueradeAll: c.masqueradeAll, masqueradeBit: c.masqueradeBit };
  if (version === 'v1alpha1') {
    return {
      text: stringify({
        apiVersion: KUBE_PROXY_API_VERSION,
        ...common,
        bindAddress: '0.0.0.0',
        clusterCIDR: c.clusterCIDRs.map(cidrText).join(','),
        conntrack,
        detectLocal,
        healthzBindAddress: c.healthzBindAddress,
        iptables: { localhostNodePorts: c.iptables.localhostNodePorts, ...masquerade, ...sync },
        ipvs: { ...ipvs, ...sync },
        metricsBindAddress: c.metricsBindAddress,
        nftables: { ...masquerade, ...sync },
        oomScoreAdj: c.nodeSetup.oomScoreAdj,
      }),
    };
  }
  const healthz = bindCidrs(c.healthzBindAddress);
  const metrics = bindCidrs(c.metricsBindAddress);
  if (!healthz || !metrics)
    return { error: 'a disabled health or metrics server (empty bind address) cannot be written in v1alpha2' };
  return {
    text: stringify({
      apiVersion: KUBE_PROXY_API_VERSION_V1ALPHA2,
      ...common,
      configHardFail: true,
      detectLocal: { ...detectLocal, clusterCIDRs: c.clusterCIDRs.map(cidrText) },
      healthzBindAddresses: healthz.cidrs,
      healthzBindPort: healthz.port,
      iptables: { localhostNodePorts: c.iptables.localhostNodePorts, masqueradeBit: c.masqueradeBit },
      ipvs: { ...ipvs, masqueradeBit: c.masqueradeBit },
      linux: { conntrack, masqueradeAll: c.masqueradeAll, oomScoreAdj: c.nodeSetup.oomScoreAdj },
      metricsBindAddresses: metrics.cidrs,
      metricsBindPort: metrics.port,
      nftables: { masqueradeBit: c.masqueradeBit },
      ...sync,
    }),
  };
}

function nodePortAddresses(c: ProxyConfig): string[] | null {
  const n = c.nodePortAddresses;
  const modeDefault = c.mode === 'nftables' ? 'primary' : 'all';
  if (n.kind === modeDefault) return null;
  if (n.kind === 'primary') return ['primary'];
  if (n.kind === 'all') return ['0.0.0.0/0', '::/0'];
  return n.cidrs.map(cidrText);
}

/** `IP:port` as v1alpha2's CIDR list and port (the inverse of config/v1alpha2.ts). */
function bindCidrs(address: string): { cidrs: string[]; port: number } | undefined {
  if (address === '') return undefined;
  const at = address.lastIndexOf(':');
  const host = address.slice(0, at).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(at + 1));
  if (host === '0.0.0.0') return { cidrs: ['0.0.0.0/0'], port };
  if (host === '::') return { cidrs: ['::/0'], port };
  if (host === '127.0.0.1') return { cidrs: ['127.0.0.0/8', '::1/128'], port };
  return { cidrs: [host.includes(':') ? `${host}/128` : `${host}/32`], port };
}
