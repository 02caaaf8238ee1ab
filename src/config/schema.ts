/**
 * @module config/schema
 * The shapes of KubeProxyConfiguration fields, as Go's JSON decoder sees them, shared by both
 * versions' schemas (config/file.ts, config/v1alpha2.ts).
 */

export type Field =
  | { readonly type: 'string' }
  | { readonly type: 'bool' }
  | { readonly type: 'int'; readonly min: number; readonly max: number }
  | { readonly type: 'float' }
  | { readonly type: 'duration' }
  | { readonly type: 'stringList' }
  | { readonly type: 'boolMap' }
  /** Known, accepted as is, not looked into (e.g. `logging.options`). */
  | { readonly type: 'opaque' }
  /** Known, not looked into; recorded as `true` when given non-empty (for "not supported" checks). */
  | { readonly type: 'presence' }
  | { readonly type: 'object'; readonly fields: Schema };
export type Schema = Readonly<Record<string, Field>>;

export const str: Field = { type: 'string' };
export const bool: Field = { type: 'bool' };
export const int32: Field = { type: 'int', min: -2147483648, max: 2147483647 };
const uint32: Field = { type: 'int', min: 0, max: 4294967295 };
export const float: Field = { type: 'float' };
export const duration: Field = { type: 'duration' };
export const stringList: Field = { type: 'stringList' };
const opaque: Field = { type: 'opaque' };
const presence: Field = { type: 'presence' };
export const object = (fields: Schema): Field => ({ type: 'object', fields });

/** `clientConnection` (component-base), the same in both versions. */
export const CLIENT_CONNECTION = object({
  kubeconfig: str,
  acceptContentTypes: str,
  contentType: str,
  qps: float,
  burst: int32,
});

/** `logging` (component-base LoggingConfiguration), the same in both versions. */
/** `conntrack` (v1alpha1) and `linux.conntrack` (v1alpha2): the same fields. */
export const CONNTRACK = object({
  maxPerCore: int32,
  min: int32,
  tcpEstablishedTimeout: duration,
  tcpCloseWaitTimeout: duration,
  tcpBeLiberal: bool,
  udpTimeout: duration,
  udpStreamTimeout: duration,
});

/** `winkernel`: Windows settings, read (and validated) as upstream does, unused on Linux. */
export const WINKERNEL = object({
  networkName: str,
  sourceVip: str,
  enableDSR: bool,
  rootHnsEndpointName: str,
  forwardHealthCheckVip: bool,
});

export const LOGGING = object({
  format: str,
  flushFrequency: opaque, // a Go duration string or nanoseconds
  verbosity: uint32,
  vmodule: presence,
  options: opaque,
});

/** A decoded value: strings, booleans, numbers (durations in ms), string lists. */
export type Value = string | boolean | number | readonly string[];
