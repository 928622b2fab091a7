// embetter.label.LabellingMap: a canvas scatter to lasso or box-select and label.
// Plain JS, no dependencies and nothing fetched: it must work offline. The model holds
// x, y, texts, assigned (label or null per point), predicted, suggested, selected, height.

const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                 "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#17becf"];
const PAD = 14;          // pixels between the outermost points and the canvas edge
const PICK_RADIUS = 8;   // a click or hover within this many pixels picks the nearest point
const LIST_MAX = 12;     // texts listed under "selected" (twice as many suggested ones)

function h(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function inPolygon(px, py, poly) {  // ray casting, pixel space
  let inside = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i], [xj, yj] = poly[j];
    if ((yi > py) !== (yj > py) && px < ((xj - xi) * (py - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

function extent(values) {  // no Math.min(...values): spreading 100k+ arguments overflows
  let lo = Infinity, hi = -Infinity;
  for (const v of values) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
  return [lo, hi];
}

function render({ model, el }) {
  const root = h("div", "em-map");
  const bar = h("div", "em-toolbar");
  const lasso = h("button", "em-lasso em-mode em-on", "lasso");
  const box = h("button", "em-box em-mode", "box");
  const input = h("input", "em-label-input");
  input.placeholder = "label";
  input.setAttribute("aria-label", "label for the selection");
  const labelButton = h("button", "em-label-button", "label selection");
  const unlabelButton = h("button", "em-unlabel-button", "unlabel");
  const suggestButton = h("button", "em-suggest-button", "select suggested");
  const status = h("span", "em-status");
  bar.append(lasso, box, input, labelButton, unlabelButton, suggestButton, status);

  const body = h("div", "em-body");
  const plot = h("div", "em-plot");
  const canvas = h("canvas", "em-canvas");
  const tip = h("div", "em-tip");
  plot.append(canvas, tip);
  const side = h("div", "em-side");
  const legend = h("div", "em-legend");
  const selHead = h("div", "em-head");
  const selList = h("ol", "em-selected");
  const sugHead = h("div", "em-head");
  const sugList = h("ol", "em-suggested");
  side.append(legend, selHead, selList, sugHead, sugList);
  body.append(plot, side);
  root.append(bar, body);
  el.appendChild(root);

  let mode = "lasso";
  let px = [], py = [];          // pixel positions of the points
  let width = 0, height = 0;
  let drag = null;               // {path: [[x, y]...], shift}
  const base = document.createElement("canvas");  // the points, redrawn on state changes

  const get = (name) => model.get(name) || [];
  const n = () => get("x").length;

  function colours() {
    const names = [...new Set([...get("assigned"), ...get("predicted")].filter((v) => v != null))];
    names.sort();
    const map = new Map(names.map((name, i) => [name, PALETTE[i % PALETTE.length]]));
    return map;
  }

  function layout() {
    width = Math.max(240, Math.floor(plot.clientWidth || 560));
    height = model.get("height") || 420;
    const ratio = window.devicePixelRatio || 1;
    for (const c of [canvas, base]) {
      c.width = width * ratio;
      c.height = height * ratio;
    }
    canvas.style.width = width + "px";
    canvas.style.height = height + "px";
    const xs = get("x"), ys = get("y");
    const [x0, x1] = extent(xs), [y0, y1] = extent(ys);
    const sx = (width - 2 * PAD) / (x1 - x0 || 1), sy = (height - 2 * PAD) / (y1 - y0 || 1);
    px = xs.map((v) => PAD + (v - x0) * sx);
    py = ys.map((v) => height - PAD - (v - y0) * sy);
  }

  function drawBase() {
    const ratio = window.devicePixelRatio || 1;
    const ctx = base.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const colour = colours();
    const assigned = get("assigned"), predicted = get("predicted");
    for (let i = 0; i < px.length; i++) {  // unlabelled first, faint; labelled on top
      if (assigned[i] != null) continue;
      ctx.globalAlpha = predicted[i] != null ? 0.35 : 0.45;
      ctx.fillStyle = predicted[i] != null ? colour.get(predicted[i]) : "#9aa0a6";
      ctx.beginPath();
      ctx.arc(px[i], py[i], 3, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.globalAlpha = 1;
    for (let i = 0; i < px.length; i++) {
      if (assigned[i] == null) continue;
      ctx.fillStyle = colour.get(assigned[i]);
      ctx.beginPath();
      ctx.arc(px[i], py[i], 4, 0, 2 * Math.PI);
      ctx.fill();
    }
    rings(get("suggested"), 7, 2, "#111");
    rings(get("selected"), 5, 1.5, "#d62728");

    function rings(indices, radius, width, colour) {
      ctx.lineWidth = width;
      ctx.strokeStyle = colour;
      for (const i of indices) {
        ctx.beginPath();
        ctx.arc(px[i], py[i], radius, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
  }

  function draw() {
    const ratio = window.devicePixelRatio || 1;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(base, 0, 0);
    if (!drag || drag.path.length < 2) return;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.strokeStyle = "#d62728";
    ctx.fillStyle = "rgba(214, 39, 40, 0.08)";
    ctx.setLineDash([4, 3]);
    ctx.beginPath();
    const shape = region(drag.path);
    shape.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.closePath();
    ctx.fill();
    ctx.stroke();
    ctx.setLineDash([]);
  }

  function region(path) {  // the polygon a drag encloses: the lasso itself, or the box
    if (mode === "lasso") return path;
    const [a, b] = [path[0], path[path.length - 1]];
    return [[a[0], a[1]], [b[0], a[1]], [b[0], b[1]], [a[0], b[1]]];
  }

  function nearest(x, y) {
    let best = -1, bestD = PICK_RADIUS * PICK_RADIUS;
    for (let i = 0; i < px.length; i++) {
      const d = (px[i] - x) ** 2 + (py[i] - y) ** 2;
      if (d <= bestD) [best, bestD] = [i, d];
    }
    return best;
  }

  function select(indices, add) {
    const chosen = new Set(add ? get("selected") : []);
    indices.forEach((i) => chosen.add(i));
    model.set("selected", [...chosen].sort((a, b) => a - b));
    model.save_changes();
  }

  function label(value) {
    const selected = get("selected");
    if (!selected.length) return say("select points first");
    if (value !== null && !value) return say("type a label first");
    const assigned = [...get("assigned")];
    for (const i of selected) assigned[i] = value;
    model.set("assigned", assigned);
    model.save_changes();
  }

  function say(message) {
    status.textContent = message;
  }

  function sidebar() {
    const texts = get("texts"), assigned = get("assigned"), selected = get("selected");
    const suggested = get("suggested");
    const colour = colours();
    const counts = new Map();
    assigned.forEach((v) => v != null && counts.set(v, (counts.get(v) || 0) + 1));
    legend.replaceChildren(...[...colour.keys()].map((name) => {
      const row = h("div", "em-key");
      const swatch = h("span", "em-swatch");
      swatch.style.background = colour.get(name);
      row.append(swatch, document.createTextNode(`${name} (${counts.get(name) || 0})`));
      return row;
    }));
    const item = (i) => {
      const li = h("li", "", texts[i]);
      if (assigned[i] != null) li.prepend(h("b", "", `${assigned[i]}: `));
      li.title = `row ${i}`;
      return li;
    };
    selHead.textContent = `selected (${selected.length})`;
    selList.replaceChildren(...selected.slice(0, LIST_MAX).map(item));
    if (selected.length > LIST_MAX) selList.append(h("li", "em-more", `and ${selected.length - LIST_MAX} more`));
    sugHead.textContent = `suggested next (${suggested.length})`;
    sugList.replaceChildren(...suggested.slice(0, 2 * LIST_MAX).map(item));
    if (suggested.length > 2 * LIST_MAX) sugList.append(h("li", "em-more", `and ${suggested.length - 2 * LIST_MAX} more`));
    const done = assigned.filter((v) => v != null).length;
    say(`${selected.length} selected · ${done} of ${n()} labelled`);
  }

  function refresh(relayout) {
    if (relayout) layout();
    drawBase();
    draw();
    sidebar();
  }

  function position(event) {
    const rect = canvas.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    canvas.setPointerCapture?.(event.pointerId);
    drag = { path: [position(event)], shift: event.shiftKey };
    tip.style.display = "none";
  });
  canvas.addEventListener("pointermove", (event) => {
    const [x, y] = position(event);
    if (drag) {
      drag.path.push([x, y]);
      draw();
      return;
    }
    const i = nearest(x, y);
    if (i < 0) {
      tip.style.display = "none";
      return;
    }
    const assigned = get("assigned")[i], predicted = get("predicted")[i];
    const note = assigned != null ? `label: ${assigned}` : predicted != null ? `predicted: ${predicted}` : "";
    tip.textContent = `${get("texts")[i]}${note ? "\n" + note : ""}`;
    tip.style.left = `${x + 12}px`;
    tip.style.top = `${y + 12}px`;
    tip.style.display = "block";
  });
  canvas.addEventListener("pointerup", (event) => {
    if (!drag) return;
    const { path, shift } = drag;
    drag = null;
    path.push(position(event));
    const xs = path.map((p) => p[0]), ys = path.map((p) => p[1]);
    const [[x0, x1], [y0, y1]] = [extent(xs), extent(ys)];
    const span = Math.max(x1 - x0, y1 - y0);
    if (span < 4) {  // a click: the nearest point, or nothing (clears unless shift is held)
      const i = nearest(...path[0]);
      select(i < 0 ? [] : [i], shift);
    } else {
      const shape = region(path);
      const inside = [];
      for (let i = 0; i < px.length; i++) if (inPolygon(px[i], py[i], shape)) inside.push(i);
      select(inside, shift);
    }
    draw();
  });
  canvas.addEventListener("pointerleave", () => (tip.style.display = "none"));

  for (const [button, name] of [[lasso, "lasso"], [box, "box"]]) {
    button.addEventListener("click", () => {
      mode = name;
      lasso.classList.toggle("em-on", name === "lasso");
      box.classList.toggle("em-on", name === "box");
    });
  }
  labelButton.addEventListener("click", () => label(input.value.trim()));
  input.addEventListener("keydown", (event) => event.key === "Enter" && label(input.value.trim()));
  unlabelButton.addEventListener("click", () => label(null));
  suggestButton.addEventListener("click", () => select(get("suggested"), false));

  const onData = () => refresh(true);
  const onState = () => refresh(false);
  const events = [["change:x", onData], ["change:y", onData], ["change:height", onData],
                  ["change:texts", onState], ["change:assigned", onState],
                  ["change:predicted", onState], ["change:suggested", onState],
                  ["change:selected", onState]];
  events.forEach(([name, fn]) => model.on(name, fn));
  const resize = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(() => {
    if (Math.floor(plot.clientWidth) !== width) refresh(true);
  });
  resize?.observe(plot);
  refresh(true);
  return () => {
    events.forEach(([name, fn]) => model.off(name, fn));
    resize?.disconnect();
  };
}

export default { render };
