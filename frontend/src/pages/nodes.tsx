// Nodes (admin keys): capacity, allocation, health, and this instance's warm pool.
import { api } from "../api";
import { bytes, dateTime, mib, relative } from "../format";
import { useLoad } from "../hooks";
import type { HutchNode, HutchStatus } from "../types";
import { ActionButton, ErrorText, Section, DataTable } from "../components/ui";

export function NodesPage() {
  const nodes = useLoad((signal) => api.get<HutchNode[]>("/nodes", signal), [], 3000);
  const status = useLoad((signal) => api.get<HutchStatus>("/hutch/status", signal), [], 3000);
  return (
    <>
      <h1>Nodes</h1>
      <ErrorText error={nodes.error} />
      <DataTable
        testid="nodes"
        caption="Nodes of the cluster"
        columns={["Node", "Status", "Sandboxes", "CPU allocated", "Memory allocated", "Disk allocated", "Host load", "Heartbeat"]}
        actions="Actions"
        rows={(nodes.data)}
        row={(n) => (
          <tr key={n.id}>
            <td data-label="Node">
              <span class="mono">{n.id}</span>
              <br />
              <span class="muted">
                {n.address} · v{n.version}
              </span>
            </td>
            <td data-label="Status">
              <span class={`state state-${n.status}`}>{n.status}</span>
              {n.lostReason ? <span class="muted"> {n.lostReason}</span> : null}
            </td>
            <td data-label="Sandboxes">
              {n.sandboxCount} of {n.capacity.maxSandboxes}
              {n.sandboxStartingCount ? ` (${n.sandboxStartingCount} starting)` : ""}
            </td>
            <td data-label="CPU allocated">
              <meter min={0} max={n.capacity.cpuCount} value={n.metrics.allocatedCPU} aria-label="CPU allocated" /> {n.metrics.allocatedCPU} / {n.capacity.cpuCount}
            </td>
            <td data-label="Memory allocated">
              <meter min={0} max={n.metrics.memoryTotalBytes} value={n.metrics.allocatedMemoryBytes} aria-label="Memory allocated" /> {bytes(n.metrics.allocatedMemoryBytes)} /{" "}
              {bytes(n.metrics.memoryTotalBytes)}
            </td>
            <td data-label="Disk allocated">
              {mib(n.allocatedDiskMB)} / {mib(n.capacity.diskMB)}
            </td>
            <td data-label="Host load">
              {n.metrics.cpuPercent} % CPU, {bytes(n.metrics.memoryUsedBytes)}
            </td>
            <td data-label="Heartbeat" title={`lease until ${dateTime(n.leaseExpiresAt)}`}>
              {relative(n.heartbeatAt)}
            </td>
            <td>
              {n.status === "ready" ? (
                <ActionButton label="Drain" action={() => api.send("POST", `/nodes/${encodeURIComponent(n.id)}`, { status: "draining" })} done={nodes.reload} />
              ) : n.status === "draining" ? (
                <ActionButton label="Undrain" action={() => api.send("POST", `/nodes/${encodeURIComponent(n.id)}`, { status: "ready" })} done={nodes.reload} />
              ) : null}
            </td>
          </tr>
        )}
      />
      {status.data ? (
        <Section title={`Warm pool of ${status.data.nodeID}`} id="pool">
          {status.data.pool.length ? (
            <ul class="pool">
              {status.data.pool.map((p) => (
                <li key={p.templateID}>
                  <label>
                    {p.templateID}: <meter min={0} max={p.target || 1} value={p.ready} /> {p.ready} of {p.target} ready
                  </label>
                </li>
              ))}
            </ul>
          ) : (
            <p class="muted">No warm pool configured.</p>
          )}
        </Section>
      ) : null}
    </>
  );
}
