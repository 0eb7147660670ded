// The compare page: the best-so-far curves of several studies on one chart (each
// study's analysis, fetched from augur's own API), trial by trial in order.
'use strict';
(async () => {
  const root = document.getElementById('compare');
  const names = JSON.parse(root.dataset.studies);
  const series = [];
  const rows = [];
  for (const name of names) {
    const r = await fetch(`/api/studies/${encodeURIComponent(name)}/analysis`);
    if (!r.ok) { rows.push([name, `cannot load: ${r.status}`]); continue; }
    const a = await r.json();
    const max = a.objective.goal === 'maximize';
    let best = null;
    const curve = a.trials.filter((t) => t.value !== null).sort((x, y) => x.id - y.id).map((t, i) => {
      if (best === null || (max ? t.value > best : t.value < best)) best = t.value;
      return [i + 1, best];
    });
    series.push({ type: 'line', step: 'end', name, symbol: 'none', data: curve });
    rows.push([name, `${a.objective.goal} ${a.objective.metric}: best ${best === null ? '-' : +best.toPrecision(6)} after ${curve.length} trials with a value (${a.oracle})`]);
  }
  const box = document.createElement('div');
  box.className = 'chart wide';
  root.append(box);
  const c = echarts.init(box, null, { renderer: 'svg' });
  c.setOption({
    title: { text: 'best so far, trial by trial', left: 'center', textStyle: { fontSize: 13 } },
    legend: { top: 30 }, grid: { top: 70 }, tooltip: { trigger: 'axis' }, animation: false,
    xAxis: { type: 'value', name: 'trials with a value', minInterval: 1 }, yAxis: { type: 'value', scale: true },
    dataZoom: [{ type: 'inside' }], series,
  });
  const list = document.createElement('ul');
  for (const [n, s] of rows) {
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = `/studies/${encodeURIComponent(n)}`; a.textContent = n;
    li.append(a, `: ${s}`);
    list.append(li);
  }
  root.append(list);
})();
