// A time series chart on uPlot. Its canvas is a picture: the figure's caption and the
// ``aria-label`` say the newest values in words.
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface Series {
  label: string;
  values: (number | null)[];
  stroke: string;
}

export function TimeChart(props: {
  title: string;
  times: number[];
  series: Series[];
  unit: (v: number) => string;
  summary: string;
  testId: string;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const unit = useRef(props.unit);
  unit.current = props.unit;

  useEffect(() => {
    const el = box.current!;
    const width = () => Math.max(240, el.clientWidth || 320);
    const opts: uPlot.Options = {
      width: width(),
      height: 180,
      series: [{}, ...props.series.map((s) => ({ label: s.label, stroke: s.stroke, width: 2, value: (_u: uPlot, v: number | null) => (v == null ? "–" : unit.current(v)) }))],
      axes: [{}, { values: (_u: uPlot, ticks: number[]) => ticks.map((t) => unit.current(t)), size: 70 }],
      scales: { x: { time: true } },
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
    };
    plot.current = new uPlot(opts, [props.times, ...props.series.map((s) => s.values)] as uPlot.AlignedData, el);
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: width(), height: 180 }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [props.series.length]);

  useEffect(() => {
    plot.current?.setData([props.times, ...props.series.map((s) => s.values)] as uPlot.AlignedData);
  }, [props.times, props.series]);

  return (
    <figure class="chart" data-testid={props.testId} data-points={props.times.length}>
      <figcaption>
        <strong>{props.title}</strong> <span class="muted">{props.summary}</span>
      </figcaption>
      <div ref={box} role="img" aria-label={`${props.title}: ${props.summary}`} />
    </figure>
  );
}
