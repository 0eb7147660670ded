// The trial page: one chart per metric series (ECharts, from the JSON the page
// embeds), then the log, streamed from the API as it grows.
'use strict';
(() => {
  const series = JSON.parse(document.getElementById('series-data').textContent);
  const box = document.getElementById('charts');
  for (const [name, points] of Object.entries(series.metrics)) {
    const div = document.createElement('div');
    div.className = 'chart';
    box.append(div);
    echarts.init(div, null, { renderer: 'svg' }).setOption({
      title: { text: name, left: 'center', textStyle: { fontSize: 13 } }, animation: false,
      tooltip: { trigger: 'axis' }, dataZoom: [{ type: 'inside' }],
      xAxis: { type: 'value', name: series.step, min: 'dataMin' }, yAxis: { type: 'value', name, scale: true },
      series: [{ type: 'line', data: points, showSymbol: points.length < 50 }],
    });
  }
  const pre = document.getElementById('log');
  (async () => {
    const r = await fetch(pre.dataset.src);
    const rd = r.body.getReader();
    const dec = new TextDecoder();
    for (;;) {
      const { done, value } = await rd.read();
      if (done) { pre.dataset.done = '1'; break; }
      pre.textContent += dec.decode(value, { stream: true });
      pre.scrollTop = pre.scrollHeight;
    }
  })();
})();
