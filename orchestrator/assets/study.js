// The study page: draws /api/studies/NAME/analysis with ECharts (vendored, served by
// augur itself; nothing comes from the network). Filters live in the URL, so a
// filtered view is a permalink; an active study is polled every 5 s, keeping filters,
// the contour's pair and each chart's zoom. A study of several objectives gains a
// Pareto scatter (coloured by rank, infeasible points hollow), the front's hypervolume
// trial by trial, and an objective selector the other charts follow.
'use strict';
(() => {
  const root = document.getElementById('analysis');
  const src = root.dataset.src;
  const study = root.dataset.study;
  const STATE_COLOR = {
    succeeded: '#2a7d2a', failed: '#c0392b', lost: '#e67e22', pruned: '#8e44ad',
    running: '#1f5fbf', starting: '#7fa7e0', pending: '#999', cancelled: '#666',
  };
  // Fronts 1, 2, 3 and the rest, each with at least 4.5:1 contrast on white (the
  // table writes ranks in them); infeasible points are hollow grey triangles, told
  // apart by shape, not colour alone.
  const RANK_COLOR = ['#b2182b', '#b35806', '#2166ac', '#636363'];
  const rankColor = (r) => RANK_COLOR[Math.min(r, RANK_COLOR.length) - 1];
  const charts = {};
  let data = null;
  // The objective the charts show (a study of several picks one; null: the first).
  let obj = null;
  const cur = () => obj || data.objective;

  // ---- filters (the URL's query is the filtered view's permalink) ----------------
  const filters = new URLSearchParams(location.search);
  const keep = (t) => {
    for (const [k, v] of filters) {
      if (v === '') continue;
      if (k === 'state') { if (!v.split(',').includes(t.state)) return false; continue; }
      const x = k === 'value' || k === 'rank' ? t[k] : k.startsWith('m:') ? t.metrics[k.slice(2)] : t.params[k];
      if (x === undefined || x === null) return false;
      const range = v.match(/^\s*(-?[\d.e+-]*)\s*\.\.\s*(-?[\d.e+-]*)\s*$/i);
      if (range) {
        const n = Number(x);
        if (range[1] !== '' && n < Number(range[1])) return false;
        if (range[2] !== '' && n > Number(range[2])) return false;
      } else if (!String(x).toLowerCase().includes(v.toLowerCase())) return false;
    }
    return true;
  };
  const setFilter = (k, v) => {
    if (v === '') filters.delete(k); else filters.set(k, v);
    const q = filters.toString();
    history.replaceState(null, '', q ? `?${q}` : location.pathname);
    render();
  };

  // ---- helpers ---------------------------------------------------------------------
  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  };
  // Tooltips are HTML: every value from a record (parameter names and values,
  // metric names, states) is escaped before it goes into one.
  const esc = (v) => String(v).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
  const fmt = (v) => (v === null || v === undefined ? '' : typeof v === 'number'
    ? (Math.abs(v) >= 1e-3 && Math.abs(v) < 1e6 ? String(+v.toPrecision(6)) : v.toExponential(3)) : String(v));
  const better = (a, b) => (cur().goal === 'maximize' ? a > b : a < b);
  const axisFor = (p) => (p.kind === 'categorical'
    ? { type: 'category', data: p.values.map(String) }
    : { type: p.log ? 'log' : 'value', scale: true });
  const xOf = (p, t) => (p.kind === 'categorical' ? String(t.params[p.name]) : t.params[p.name]);
  const open = (id) => { location.href = `/trials/${encodeURIComponent(study)}/${id}`; };
  function chart(id, title, option, wide) {
    let c = charts[id];
    if (!c) {
      const box = el('div', { class: wide ? 'chart wide' : 'chart', id: `chart-${id}`, role: 'img' });
      document.getElementById('charts').append(box);
      c = charts[id] = echarts.init(box, null, { renderer: 'svg' });
      c.on('click', (e) => { if (e.data && e.data.id !== undefined) open(e.data.id); });
    }
    c.getDom().setAttribute('aria-label', title);
    c.setOption({ title: { text: title, left: 'center', textStyle: { fontSize: 13 } },
      tooltip: { trigger: 'item', formatter: (e) => (e.data && e.data.tip) || esc(e.name || '') },
      animation: false, ...option }, { replaceMerge: ['series', 'xAxis', 'yAxis', 'parallelAxis'] });
  }
  const point = (t, x, y) => ({
    id: t.id, value: [x, y], itemStyle: { color: STATE_COLOR[t.state] },
    tip: `trial ${esc(t.id)} (${esc(t.state)})<br>${esc(cur().metric)} = ${esc(fmt(t.value))}<br>${Object.entries(t.params).map(([k, v]) => `${esc(k)} = ${esc(fmt(v))}`).join('<br>')}`,
  });

  // ---- the charts ------------------------------------------------------------------
  function historyChart(shown) {
    const valued = shown.filter((t) => t.value !== null).sort((a, b) => a.id - b.id);
    let best = null;
    const bestLine = valued.map((t) => { if (best === null || better(t.value, best)) best = t.value; return [t.id, best]; });
    chart('history', `${cur().metric} per trial`, {
      xAxis: { type: 'value', name: 'trial', minInterval: 1, min: 'dataMin' },
      yAxis: { type: 'value', name: cur().metric, scale: true },
      dataZoom: [{ type: 'inside' }],
      series: [
        { type: 'scatter', name: 'trial', data: valued.map((t) => point(t, t.id, t.value)) },
        { type: 'line', name: 'best so far', step: 'end', symbol: 'none', data: bestLine, color: '#e08e0b' },
      ],
    }, true);
  }

  function intermediate(shown) {
    const curved = shown.filter((t) => t.curve.length > 1);
    if (!curved.length) return;
    const series = curved.map((t) => ({
      type: 'line', name: `trial ${t.id}`, showSymbol: false, data: t.curve.map(([s, v]) => ({ id: t.id, value: [s, v], tip: `trial ${esc(t.id)} (${esc(t.state)}): step ${esc(s)}, ${esc(fmt(v))}` })),
      lineStyle: { width: t.state === 'pruned' ? 1 : 1.5, color: STATE_COLOR[t.state], opacity: t.state === 'pruned' ? 0.55 : 0.9 },
      itemStyle: { color: STATE_COLOR[t.state] }, emphasis: { focus: 'series' },
    }));
    if (data.rungs.length) {
      series.push({ type: 'line', name: 'rungs', data: [], markLine: { symbol: 'none', silent: true,
        lineStyle: { type: 'dashed', color: '#aaa' }, label: { formatter: 'rung {c}' },
        data: data.rungs.map((r) => ({ xAxis: r })) } });
    }
    chart('intermediate', `intermediate values (pruned in purple${data.rungs.length ? ', ASHA rungs dashed' : ''})`, {
      xAxis: { type: 'value', name: data.step, min: 'dataMin' },
      yAxis: { type: 'value', name: data.objective.metric, scale: true },
      dataZoom: [{ type: 'inside' }], series,
    }, true);
  }

  function parallel(shown) {
    const valued = shown.filter((t) => t.value !== null);
    if (!valued.length || !data.params.length) return;
    const dims = data.params.map((p, i) => ({ dim: i, name: p.name, ...axisFor(p) }));
    dims.push({ dim: dims.length, name: cur().metric, type: 'value', scale: true });
    const vals = valued.map((t) => t.value);
    chart('parallel', 'parallel coordinates', {
      parallelAxis: dims,
      parallel: { left: 60, right: 80, top: 60, bottom: 30 },
      visualMap: { type: 'continuous', min: Math.min(...vals), max: Math.max(...vals), dimension: dims.length - 1,
        inRange: { color: cur().goal === 'maximize' ? ['#d0d8e8', '#1f5fbf'] : ['#1f5fbf', '#d0d8e8'] }, right: 0, top: 'middle', calculable: true },
      series: [{ type: 'parallel', lineStyle: { width: 1.5, opacity: 0.7 },
        data: valued.map((t) => ({ id: t.id, value: [...data.params.map((p) => xOf(p, t)), t.value], tip: `trial ${esc(t.id)}: ${esc(fmt(t.value))}` })) }],
    }, true);
  }

  function importance() {
    const imp = data.importance;
    if (!imp.params.length) {
      document.getElementById('importance-note').textContent = `Parameter importance: ${imp.why_not} (${imp.trials} so far).`;
      return;
    }
    document.getElementById('importance-note').textContent = `Parameter importance: ${imp.method}, from ${imp.trials} trials.`;
    const sorted = [...imp.params].sort((a, b) => a.importance - b.importance);
    chart('importance', 'parameter importance', {
      grid: { left: 110, right: 70 },
      xAxis: { type: 'value', max: 1 }, yAxis: { type: 'category', data: sorted.map((p) => p.name) },
      series: [{ type: 'bar', data: sorted.map((p) => ({ value: p.importance, tip: `${esc(p.name)}: ${esc(fmt(p.importance))}` })), color: '#1f5fbf',
        label: { show: true, position: 'right', formatter: (e) => e.value.toFixed(3) } }],
    });
  }

  let pair = null;
  function contour(shown) {
    const numeric = data.params.filter((p) => p.kind !== 'categorical');
    const box = document.getElementById('contour-pick');
    if (numeric.length < 2) { box.textContent = ''; return; }
    if (!pair) {
      const rank = (p) => -(data.importance.params.find((q) => q.name === p.name) || { importance: 0 }).importance;
      const best = [...numeric].sort((a, b) => rank(a) - rank(b));
      pair = [best[0].name, best[1].name];
    }
    if (!box.childElementCount) {
      const pick = (i) => el('select', { 'aria-label': `contour's ${i ? 'vertical' : 'horizontal'} axis`, onchange: (e) => { pair[i] = e.target.value; render(); } },
        ...numeric.map((p) => { const o = el('option', { value: p.name }, p.name); if (p.name === pair[i]) o.selected = true; return o; }));
      box.append('contour of ', pick(0), ' × ', pick(1));
    }
    const [px, py] = pair.map((n) => data.params.find((p) => p.name === n));
    const valued = shown.filter((t) => t.value !== null && t.params[px.name] !== undefined && t.params[py.name] !== undefined);
    if (!valued.length) return;
    // Inverse-distance interpolation on a 24 x 24 grid, on each axis's own scale.
    const tr = (p, v) => (p.log ? Math.log10(v) : v);
    const lim = (p) => { const xs = valued.map((t) => tr(p, t.params[p.name])); return [Math.min(...xs), Math.max(...xs)]; };
    const [x0, x1] = lim(px); const [y0, y1] = lim(py); const N = 24;
    const cells = [];
    for (let i = 0; i < N; i++) {
      for (let j = 0; j < N; j++) {
        const gx = x0 + ((x1 - x0) * (i + 0.5)) / N; const gy = y0 + ((y1 - y0) * (j + 0.5)) / N;
        let w = 0; let s = 0;
        for (const t of valued) {
          const dx = (tr(px, t.params[px.name]) - gx) / ((x1 - x0) || 1); const dy = (tr(py, t.params[py.name]) - gy) / ((y1 - y0) || 1);
          const k = 1 / (dx * dx + dy * dy + 1e-6) ** 2; w += k; s += k * t.value;
        }
        cells.push([i, j, s / w]);
      }
    }
    const vals = cells.map((c) => c[2]);
    const back = (p, a, b, k) => { const v = a + ((b - a) * (k + 0.5)) / N; return String(+(p.log ? 10 ** v : v).toPrecision(3)); };
    chart('contour', `${cur().metric} over ${px.name} × ${py.name}`, {
      grid: { right: 90 },
      xAxis: [{ type: 'category', data: [...Array(N).keys()].map((k) => back(px, x0, x1, k)), name: px.name, show: true },
        { type: 'value', show: false, min: x0, max: x1 }],
      yAxis: [{ type: 'category', data: [...Array(N).keys()].map((k) => back(py, y0, y1, k)), name: py.name },
        { type: 'value', show: false, min: y0, max: y1 }],
      visualMap: { min: Math.min(...vals), max: Math.max(...vals), seriesIndex: 0, right: 0, top: 'middle', calculable: true,
        inRange: { color: cur().goal === 'maximize' ? ['#f7fbff', '#08306b'] : ['#08306b', '#f7fbff'] } },
      series: [
        { type: 'heatmap', data: cells, silent: true },
        { type: 'scatter', xAxisIndex: 1, yAxisIndex: 1, symbolSize: 7,
          data: valued.map((t) => ({ ...point(t, tr(px, t.params[px.name]), tr(py, t.params[py.name])), itemStyle: { color: '#e08e0b', borderColor: '#fff' } })) },
      ],
    });
  }

  function slices(shown) {
    const valued = shown.filter((t) => t.value !== null);
    for (const p of data.params) {
      chart(`slice-${p.name}`, `${cur().metric} vs ${p.name}${p.log ? ' (log scale)' : ''}`, {
        xAxis: { ...axisFor(p), name: p.name }, yAxis: { type: 'value', name: cur().metric, scale: true },
        series: [{ type: 'scatter', data: valued.filter((t) => t.params[p.name] !== undefined).map((t) => point(t, xOf(p, t), t.value)),
          symbolSize: 8, jitter: p.kind === 'categorical' ? 20 : 0 }],
      });
    }
  }

  function edf(shown) {
    const vs = shown.filter((t) => t.value !== null).map((t) => t.value).sort((a, b) => a - b);
    if (!vs.length) return;
    chart('edf', `empirical distribution of ${cur().metric}`, {
      xAxis: { type: 'value', name: cur().metric, scale: true }, yAxis: { type: 'value', name: 'fraction of trials', max: 1 },
      series: [{ type: 'line', step: 'end', symbol: 'none', data: vs.map((v, i) => [v, (i + 1) / vs.length]) }],
    });
  }

  // ---- several objectives: the front, its hypervolume, the objective shown ----------
  function objectivePick() {
    const box = document.getElementById('objective-pick');
    if (data.objectives.length < 2 || box.childElementCount) return;
    const pick = el('select', { id: 'objective', onchange: (e) => { obj = data.objectives[Number(e.target.value)]; render(); } },
      ...data.objectives.map((o, i) => el('option', { value: String(i) }, `${o.goal} ${o.metric}`)));
    box.append(el('label', { for: 'objective' }, 'The charts below the front show '), pick);
  }

  let axes = [0, 1];
  function paretoChart(shown) {
    const objs = data.objectives;
    if (objs.length < 2) return;
    const box = document.getElementById('pareto-pick');
    if (objs.length > 2 && !box.childElementCount) {
      const pick = (i) => el('select', { 'aria-label': `Pareto chart's ${i ? 'vertical' : 'horizontal'} axis`, onchange: (e) => { axes[i] = Number(e.target.value); render(); } },
        ...objs.map((o, k) => { const opt = el('option', { value: String(k) }, o.metric); if (k === axes[i]) opt.selected = true; return opt; }));
      box.append('Pareto chart of ', pick(0), ' × ', pick(1));
    }
    const [a, b] = axes.map((k) => objs[k]);
    const placed = shown.filter((t) => t.metrics[a.metric] !== undefined && t.metrics[b.metric] !== undefined);
    const dot = (t) => ({ id: t.id, value: [t.metrics[a.metric], t.metrics[b.metric]],
      tip: `trial ${esc(t.id)} (${esc(t.state)})${t.rank ? `, front ${esc(t.rank)}` : ''}${t.feasible === false ? ', infeasible' : ''}<br>${[...new Set([...objs.map((o) => o.metric), ...Object.keys(t.metrics)])].map((m) => `${esc(m)} = ${esc(fmt(t.metrics[m]))}`).join('<br>')}` });
    const last = RANK_COLOR.length;
    const bucket = (t) => (t.feasible === false ? 'infeasible' : !t.rank ? 'not ranked' : t.rank >= last ? `front ${last}+` : `front ${t.rank}`);
    const names = [...RANK_COLOR.map((_, i) => `front ${i + 1}${i + 1 === last ? '+' : ''}`), 'infeasible', 'not ranked'];
    const series = names.map((name, i) => ({ type: 'scatter', name, symbolSize: 9, symbol: name === 'infeasible' ? 'triangle' : 'circle',
      itemStyle: i < last ? { color: RANK_COLOR[i] } : { color: 'transparent', borderColor: '#595959', borderWidth: 1.5 },
      data: placed.filter((t) => bucket(t) === name).map(dot) })).filter((x) => x.data.length);
    // The front in these two objectives (of several, the study's front seen from
    // this side), its points joined in order of the first.
    const sign = (o) => (o.goal === 'maximize' ? -1 : 1);
    const xy = placed.filter((t) => t.feasible !== false && t.rank).map((t) => [t.metrics[a.metric], t.metrics[b.metric]]);
    const beats = (p, q) => sign(a) * p[0] <= sign(a) * q[0] && sign(b) * p[1] <= sign(b) * q[1] && (p[0] !== q[0] || p[1] !== q[1]);
    const line = xy.filter((p) => !xy.some((q) => beats(q, p))).sort((p, q) => p[0] - q[0]);
    const lineName = objs.length === 2 ? 'front 1' : 'front of these two';
    series.push({ type: 'line', name: lineName, data: line, symbol: 'none', silent: true, lineStyle: { type: 'dashed', color: RANK_COLOR[0] }, itemStyle: { color: RANK_COLOR[0] } });
    chart('pareto', `Pareto front: ${a.goal} ${a.metric} × ${b.goal} ${b.metric}`, {
      legend: { top: 24, data: series.map((x) => x.name).filter((n, i, all) => all.indexOf(n) === i) }, grid: { top: 70 },
      xAxis: { type: 'value', name: a.metric, scale: true }, yAxis: { type: 'value', name: b.metric, scale: true },
      dataZoom: [{ type: 'inside' }], series,
    }, true);
  }

  function hypervolumeChart() {
    const hv = data.hypervolume;
    if (!hv) return;
    const text = 'hypervolume of the front, trial by trial';
    chart('hypervolume', text, {
      title: { text, left: 'center', textStyle: { fontSize: 13 },
        subtext: `feasible trials; reference point ${data.objectives.map((o, i) => `${o.metric} = ${fmt(hv.reference[i])}`).join(', ')}` },
      grid: { top: 70 },
      xAxis: { type: 'value', name: 'trial', minInterval: 1, min: 'dataMin' }, yAxis: { type: 'value', name: 'hypervolume', scale: true },
      series: [{ type: 'line', step: 'end', symbol: 'none', data: hv.history, color: RANK_COLOR[0] }],
    }, true);
  }

  // ---- the trial table: a column per parameter, filters and sorting -----------------
  let sortKey = 'id'; let sortUp = true;
  function table(shown) {
    const multi = data.objectives.length > 1 || data.constraints.length > 0;
    const results = multi ? [['rank', 'front'], ...data.objectives.map((o) => [`m:${o.metric}`, o.metric]), ...(data.constraints.length ? [['feasible', 'feasible']] : [])]
      : [['value', data.objective.metric]];
    const cols = [['id', 'trial'], ['state', 'state'], ...data.params.map((p) => [`p:${p.name}`, p.name]), ...results, ['seconds', 'ran (s)'], ...(data.priced ? [['cost', 'cost ($)']] : []), ['note', 'error / status']];
    const get = (t, k) => (k.startsWith('p:') ? t.params[k.slice(2)] : k.startsWith('m:') ? t.metrics[k.slice(2)] : k === 'note' ? (t.error || t.status || '') : t[k]);
    const rows = [...shown].sort((a, b) => {
      const x = get(a, sortKey); const y = get(b, sortKey);
      const c = x === y ? 0 : x === null || x === undefined ? 1 : y === null || y === undefined ? -1 : x > y ? 1 : -1;
      return sortUp ? c : -c;
    });
    const head = el('tr', {}, ...cols.map(([k, label]) => el('th', { onclick: () => { sortUp = sortKey === k ? !sortUp : true; sortKey = k; render(); } }, label + (sortKey === k ? (sortUp ? ' ▲' : ' ▼') : ''))));
    const filterKey = (k) => (k.startsWith('p:') ? k.slice(2) : k);
    const filterRow = el('tr', { class: 'filters' }, ...cols.map(([k]) => {
      if (k === 'id' || k === 'seconds' || k === 'cost' || k === 'note' || k === 'feasible') return el('td');
      const placeholder = k === 'state' ? 'succeeded,pruned' : 'text or lo..hi';
      const label = cols.find((c) => c[0] === k)[1];
      const input = el('input', { 'data-key': filterKey(k), placeholder, 'aria-label': `filter ${label}`, value: filters.get(filterKey(k)) || '' });
      input.addEventListener('change', () => setFilter(filterKey(k), input.value.trim()));
      return el('td', {}, input);
    }));
    const body = el('tbody', {}, ...rows.map((t) => el('tr', { class: 'link', onclick: () => open(t.id) },
      el('td', {}, el('a', { href: `/trials/${encodeURIComponent(study)}/${t.id}` }, String(t.id))),
      el('td', { class: `state-${t.state}` }, t.state),
      ...data.params.map((p) => el('td', { class: p.kind === 'categorical' ? '' : 'num' }, fmt(t.params[p.name]))),
      ...results.map(([k]) => (k === 'rank' ? el('td', { class: 'num', style: t.rank ? `color:${rankColor(t.rank)}` : '' }, fmt(t.rank))
        : k === 'feasible' ? el('td', {}, t.feasible === null ? '' : t.feasible ? 'yes' : 'no') : el('td', { class: 'num' }, fmt(get(t, k))))),
      el('td', { class: 'num' }, fmt(t.seconds)),
      ...(data.priced ? [el('td', { class: 'num' }, t.cost === null ? '' : t.cost.toFixed(4))] : []),
      el('td', { class: 'note' }, get(t, 'note')))));
    const tbl = document.getElementById('trial-table');
    tbl.replaceChildren(el('thead', {}, head, filterRow), body);
    document.getElementById('shown').textContent = `${shown.length} of ${data.trials.length} trials shown${filters.toString() ? ' (filtered: this page\'s address keeps the filter)' : ''}`;
  }

  function render() {
    if (!data) return;
    const o = cur();
    const valueOf = (t) => (o.metric === data.objective.metric ? t.value : (t.metrics[o.metric] ?? null));
    const shown = data.trials.map((t) => ({ ...t, value: valueOf(t) })).filter(keep);
    document.getElementById('cost').textContent = data.spend;
    document.getElementById('progress').textContent = `${data.state === 'spent' ? 'budget spent' : data.state} · ${data.finished} of ${data.budget} finished · objective: ${data.objective.goal} ${data.objective.metric} · oracle ${data.oracle}`;
    objectivePick(); paretoChart(shown); hypervolumeChart();
    historyChart(shown); intermediate(shown); parallel(shown); importance(); contour(shown); slices(shown); edf(shown); table(shown);
  }

  async function load() {
    try {
      const r = await fetch(src);
      if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
      data = await r.json();
      root.dataset.loads = String(Number(root.dataset.loads || 0) + 1);
      document.getElementById('refresh').textContent = ['active', 'stopping'].includes(data.state) ? 'live: refreshed every 5 s' : '';
      render();
      if (['active', 'stopping'].includes(data.state)) setTimeout(load, 5000);
    } catch (e) {
      document.getElementById('progress').textContent = `cannot load the analysis: ${e.message}`;
      setTimeout(load, 5000);
    }
  }
  window.addEventListener('resize', () => Object.values(charts).forEach((c) => c.resize()));
  load();
})();
