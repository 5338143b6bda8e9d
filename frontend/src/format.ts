// Numbers and times as people read them.

export function bytes(n: number | string | undefined | null): string {
  if (n === undefined || n === null || n === "") return "–";
  let v = Number(n);
  if (!Number.isFinite(v)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function mib(n: number | undefined): string {
  return n === undefined ? "–" : bytes(n * 1024 * 1024);
}

export function dateTime(iso: string | undefined): string {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export function relative(iso: string | undefined, now = Date.now()): string {
  if (!iso) return "–";
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return iso;
  const s = Math.round((t - now) / 1000);
  const abs = Math.abs(s);
  const [v, unit] =
    abs < 60 ? [abs, "s"] : abs < 3600 ? [Math.round(abs / 60), "min"] : abs < 86400 ? [Math.round(abs / 3600), "h"] : [Math.round(abs / 86400), "d"];
  return s >= 0 ? `in ${v} ${unit}` : `${v} ${unit} ago`;
}

export function pct(n: number | undefined): string {
  return n === undefined || !Number.isFinite(n) ? "–" : `${n.toFixed(1)} %`;
}

/** "k=v, k2=v2" → pairs; throws on a pair without "=". */
export function parsePairs(text: string): [string, string][] {
  const out: [string, string][] = [];
  for (const raw of text.split(",")) {
    const part = raw.trim();
    if (!part) continue;
    const i = part.indexOf("=");
    if (i <= 0) throw new Error(`"${part}": want key=value`);
    out.push([part.slice(0, i).trim(), part.slice(i + 1).trim()]);
  }
  return out;
}
