/**
 * @module util/problems
 * A problem with one input object: reported with the object's identity and the field path, then
 * the object (or the offending part of it) is skipped. Pure code returns problems; the edges log them.
 */
export interface Problem {
  /** Kubernetes kind, or 'File' / 'Config' for problems that are not about an object. */
  readonly kind: string;
  /** `namespace/name`, `name`, or a file path. */
  readonly object: string;
  /** Field path such as `spec.ports[2].port`; empty when the whole object is at fault. */
  readonly path: string;
  readonly message: string;
}

export function formatProblem(p: Problem): string {
  const where = p.path ? ` ${p.path}` : '';
  return `${p.kind} ${p.object}${where}: ${p.message}`;
}
