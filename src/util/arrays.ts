/**
 * @module util/arrays
 */

/**
 * Appends every item of `items` to `target`. Unlike `target.push(...items)`, safe for lists of any
 * length (a spread passes every item as an argument: past ~100k the stack overflows, and a
 * 10,000-Service transaction has more commands than that).
 */
export function appendAll<T>(target: T[], items: Iterable<T>): void {
  for (const item of items) target.push(item);
}
