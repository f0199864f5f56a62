/** CSV for accounting exports (RFC 4180), safe to open in a spreadsheet. */

/**
 * Quotes every cell and defuses formulas: a task id chosen by someone else that starts with
 * = + - @ (or a tab/CR) would otherwise run as a formula when the file is opened.
 */
export function toCsv(header: readonly string[], rows: readonly (readonly (string | bigint | number | null)[])[]): string {
  const cell = (value: string | bigint | number | null) => {
    let s = value === null ? "" : String(value);
    if (typeof value === "string" && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
    return `"${s.replace(/"/g, '""')}"`;
  };
  return [header, ...rows].map((r) => r.map(cell).join(",")).join("\r\n") + "\r\n";
}
