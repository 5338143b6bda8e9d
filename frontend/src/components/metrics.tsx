// CPU, memory and disk over time from GET /sandboxes/{id}/metrics, polled.
import { useMemo } from "preact/hooks";
import { api } from "../api";
import { bytes, pct } from "../format";
import { useLoad } from "../hooks";
import type { Metric } from "../types";
import { TimeChart } from "./chart";
import { ErrorText, Section } from "./ui";

export function Metrics({ id, since }: { id: string; since: string }) {
  const start = Math.floor(new Date(since).getTime() / 1000);
  const samples = useLoad(
    (signal) => api.get<Metric[]>(`/sandboxes/${encodeURIComponent(id)}/metrics?start=${Number.isFinite(start) ? start : ""}`, signal),
    [id, start],
    2000,
  );
  const data = useMemo(() => {
    const m = [...(samples.data ?? [])].sort((a, b) => a.timestampUnix - b.timestampUnix);
    return {
      times: m.map((x) => x.timestampUnix),
      cpu: [{ label: "CPU used", values: m.map((x) => x.cpuUsedPct), stroke: "#2b6cb0" }],
      mem: [
        { label: "used", values: m.map((x) => x.memUsed), stroke: "#2f855a" },
        { label: "total", values: m.map((x) => x.memTotal), stroke: "#a0aec0" },
      ],
      disk: [
        { label: "used", values: m.map((x) => x.diskUsed), stroke: "#b7791f" },
        { label: "total", values: m.map((x) => x.diskTotal), stroke: "#a0aec0" },
      ],
      last: m[m.length - 1],
    };
  }, [samples.data]);
  const last = data.last;
  return (
    <Section title="Metrics" id="metrics">
      <ErrorText error={samples.error} />
      {!last && !samples.loading ? <p class="muted">No samples yet.</p> : null}
      <div class="charts">
        <TimeChart title="CPU" testId="chart-cpu" times={data.times} series={data.cpu} unit={pct} summary={last ? `${pct(last.cpuUsedPct)} of ${last.cpuCount} CPU now` : "no samples"} />
        <TimeChart title="Memory" testId="chart-memory" times={data.times} series={data.mem} unit={bytes} summary={last ? `${bytes(last.memUsed)} of ${bytes(last.memTotal)} now` : "no samples"} />
        <TimeChart title="Disk" testId="chart-disk" times={data.times} series={data.disk} unit={bytes} summary={last ? `${bytes(last.diskUsed)} of ${bytes(last.diskTotal)} now` : "no samples"} />
      </div>
    </Section>
  );
}
