"""The ESN browser, used as a person would: built from a real (tiny) store, opened in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from conftest import LABELS

CHROMIUM_PACKAGES = ["chromium"]


def _install_chromium() -> str:
    """Debian's chromium from apt (as root, the way tests/slurm/cluster.sh installs SLURM); skip elsewhere."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("browser tests need chromium: not on PATH, and installing it with apt needs root")
    if shutil.which("apt-get") is None:
        pytest.skip("browser tests need chromium: not on PATH, and apt-get (Debian/Ubuntu) is not available")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *CHROMIUM_PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed (rc={proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.fail("apt-get installed chromium but it is not on PATH")
    return found


@pytest.fixture(scope="session")
def chromium() -> str:
    return _install_chromium()


# --------------------------------------------------------------------------------------------------
# A real (tiny) site: capture -> select -> intervene -> metrics -> build_site, in seconds


FRACTION, TOP, CLIPS = 0.05, 4, 3
SELECTORS = ("mad", "cas")
EVAL_CORPORA = ("synthetic", "synthetic_again")  # two evaluation corpora: the index must show both
STEER_ALPHAS = [4.0, 1000.0]  # 4: beside gain's α = 4; 1000 (no gain beside it): enough to move the tiny model
SHOTS = Path(os.environ.get("ESN_BROWSER_SHOTS", "/tmp/browser-shots"))


@pytest.fixture(scope="module")
def inputs(tiny_adapter, tiny_manifest, tmp_path_factory) -> dict:
    """A store, two selections and their metric tables (evaluated on two corpora), made here in seconds."""
    from esn.browser import StudyTables
    from esn.capture import capture
    from esn.interventions import evaluate, selection_conditions
    from esn.metrics import summarize
    from esn.selectors import save_selection, select_variants
    from esn.tables import write_table

    work = tmp_path_factory.mktemp("browser")
    store_path = work / "store.zarr"
    capture(tiny_adapter, tiny_manifest, store_path, groups=["audio", "last"], batch_size=8, block_size=8)
    evaluation = tiny_manifest[tiny_manifest["split"] == "evaluation"]
    selections, tables = {}, []
    for s in SELECTORS:
        selections[s] = work / f"{s}.zarr"
        sel = select_variants(store_path, s, ["all"])
        save_selection(sel, selections[s])
        conditions = selection_conditions(sel, LABELS, [FRACTION], FRACTION, [1.0, 4.0])
        out = summarize(evaluate(tiny_adapter, evaluation, conditions, batch_size=8), LABELS, n_boot=20)
        for e in EVAL_CORPORA:
            paths = [work / f"{s}.{e}.{kind}.csv" for kind in ("delta_recall", "conditions")]
            write_table(out["delta_recall"], paths[0], "delta_recall")  # as the metrics stage writes them
            write_table(out["conditions"], paths[1], "conditions")
            tables.append(StudyTables(e, s, *paths))
    steering = [steering_tables(tiny_adapter, evaluation, selections, work)]  # on the first corpus only
    return {"store_path": store_path, "selections": selections, "tables": tables, "steering": steering}


def steering_tables(adapter, evaluation, selections, work):
    """A real steering run (two layers) of the sets' emotions and its tables, as rules steer and metrics write them."""
    import pandas as pd

    from esn.browser import SteeringTables
    from esn.capture import store_order
    from esn.metrics import summarize
    from esn.selectors import open_selection, selected_mask
    from esn.steering import mean_difference, residual_statistics, steer_table, steering_conditions
    from esn.tables import write_table

    sets = {}
    for s, path in selections.items():
        mask = selected_mask(open_selection(path).sel(variant="all"), FRACTION)
        sets.update({(s, e): mask.sel(emotion=e).values for e in LABELS})
    layers = [0, 1]
    utts, means, norms = residual_statistics(adapter, evaluation, layers, sets, batch_size=8)
    directions = mean_difference(means, store_order(evaluation)["emotion"].to_numpy(), LABELS)
    steers = steering_conditions(directions, {e: norms[("mad", e)] for e in LABELS}, LABELS, layers, STEER_ALPHAS,
                                 FRACTION)
    out = summarize(steer_table(adapter, evaluation, steers, batch_size=8), LABELS, n_boot=20)
    vectors = pd.DataFrame([{"selector": s, "emotion": e, "layer": l, "fraction": FRACTION, "stream": "residual",
                             "reference": s == "mad", "gain_change_norm_per_alpha": norms[(s, e)][j],
                             "mean_difference_norm": float(np.linalg.norm(directions[i, j]))}
                            for s in selections for i, e in enumerate(LABELS) for j, l in enumerate(layers)])
    paths = [work / f"steering.{kind}.csv" for kind in ("delta_recall", "conditions", "vectors")]
    write_table(out["delta_recall"], paths[0], "delta_recall")
    write_table(out["conditions"], paths[1], "conditions")
    write_table(vectors, paths[2], "steering_vectors")
    return SteeringTables(EVAL_CORPORA[0], *paths)


@pytest.fixture(scope="module")
def site(inputs, tiny_corpus, tmp_path_factory) -> Path:
    from esn.browser import build_site

    out_dir = tmp_path_factory.mktemp("browser") / "site"
    build_site(out_dir, corpus_dir=tiny_corpus, fraction=FRACTION, top=TOP, clips=CLIPS,
               title="tiny · identify synthetic", **inputs)
    return out_dir


def test_read_neurons_equals_the_store_columns(inputs):
    """The per-layer orthogonal read returns exactly the neuron's column of the store."""
    import numpy as np
    import xarray as xr

    from esn.browser import read_neurons

    ds = xr.open_zarr(inputs["store_path"], consolidated=False)
    rows = np.array([1, 4, 5, 20])
    wanted = [(1, 7), (0, 3), (1, 90), (0, 50)]
    got = read_neurons(inputs["store_path"], rows, 1, wanted)
    for layer, n in wanted:
        column = ds.isel(utterance=rows, positions=1, layer=layer, neuron=n)
        np.testing.assert_array_equal(got[(layer, n)].mean_activation, column["mean_activation"].values)
        np.testing.assert_array_equal(got[(layer, n)].frac_positive, column["frac_positive"].values)
    assert not np.array_equal(got[(1, 7)].mean_activation, got[(0, 3)].mean_activation)


def test_top_neurons_are_the_best_ranked_of_the_set(inputs):
    import numpy as np

    from esn.browser import top_neurons
    from esn.selectors import open_selection, selected_mask

    sel = open_selection(inputs["selections"]["mad"]).sel(variant="all")
    tops = top_neurons(sel, FRACTION, TOP)
    mask = selected_mask(sel, FRACTION)
    for e, lst in tops.items():
        assert [r for _, _, r, _ in lst] == list(range(TOP))
        assert all(mask.sel(emotion=e).values[l, n] for l, n, _, _ in lst)
        scores = [s for *_, s in lst]
        assert scores == sorted(scores, reverse=True) and np.isfinite(scores).all()


class Cells(HTMLParser):
    """The text of every cell of each `table.steer` under an element of a given id, row by row."""

    def __init__(self, html: str, within: str) -> None:
        super().__init__()
        self.within, self.depth, self.tables, self.row, self.cell = within, 0, [], None, None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id") == self.within:
            self.depth = 1
        elif self.depth and tag == "div":
            self.depth += 1
        if self.depth and tag == "table" and a.get("class") == "steer":
            self.tables.append([])
        if self.depth and tag == "tr" and self.tables:
            self.row = []
            self.tables[-1].append(self.row)
        if self.row is not None and tag in ("td", "th"):
            self.cell = ""

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell += data

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.row.append(self.cell.strip())
            self.cell = None
        if tag in ("tr", "table"):
            self.row = None
        if self.depth and tag == "div":
            self.depth -= 1


def test_steering_section_holds_the_tables_numbers(site, inputs):
    """Each card of a study that steers shows the emotion's steering vector: its layers, norms and, per layer and α,
    the target share and off-target Δrecall of gain on the card's set, the vector and the random direction — the
    numbers of the metric tables, read back from the HTML; a study without steering has no section."""
    from esn.tables import read_table

    html = (site / "index.html").read_text()
    st = inputs["steering"][0]
    s_delta, s_conds = read_table(st.delta_recall, "delta_recall"), read_table(st.conditions, "conditions")
    vectors = read_table(st.vectors, "steering_vectors")
    assert html.count('class="steering"') == len(SELECTORS) * len(LABELS)
    assert f"{EVAL_CORPORA[1]}-steering" not in html
    moved = []
    for t in (t for t in inputs["tables"] if t.eval_corpus == EVAL_CORPORA[0]):
        g_delta, g_conds = read_table(t.delta_recall, "delta_recall"), read_table(t.conditions, "conditions")
        for e in LABELS:
            block = f"{t.selector}-{e}-{t.eval_corpus}-steering"
            (table,) = Cells(html, block).tables
            body = table[2:]
            assert [(int(r[0]), float(r[1])) for r in body] == [(l, a) for l in (0, 1) for a in STEER_ALPHAS]

            def share(conds, mode, control, layer, alpha):
                c = conds[(conds["mode"] == mode) & (conds["target"] == e) & (conds["control"] == control)
                          & (conds["layer"] == layer) & (conds["alpha"] == alpha)]
                c = c[np.isclose(c["fraction"], FRACTION)]
                return 100 * c["target_share"].mean()

            def others(delta, mode, control, layer, alpha):
                d = delta[(delta["mode"] == mode) & (delta["target"] == e) & (delta["control"] == control)
                          & (delta["layer"] == layer) & (delta["alpha"] == alpha)
                          & ~delta["class"].isin([e, "specificity"])]
                d = d[np.isclose(d["fraction"], FRACTION)]
                return 100 * d.groupby("draw")["delta_recall"].mean().mean()

            for row in body:
                layer, alpha = int(row[0]), float(row[1])
                expected = [share(g_conds, "gain", "selected", -1, alpha),
                            share(s_conds, "steer", "selected", layer, alpha),
                            share(s_conds, "steer", "random", layer, alpha),
                            others(g_delta, "gain", "selected", -1, alpha),
                            others(s_delta, "steer", "selected", layer, alpha),
                            others(s_delta, "steer", "random", layer, alpha)]
                shown = [np.nan if c == "–" else float(c) for c in row[2:]]
                assert shown == pytest.approx(expected, abs=0.051, nan_ok=True)
                moved.append(shown[4] != 0 or shown[5] != 0)  # off-target change of the vector or random
            # the vector lines: norms from the vectors table (the matched norm is the reference selector's)
            v = vectors[(vectors["emotion"] == e)]
            for layer in (0, 1):
                ref = v[(v["layer"] == layer) & v["reference"].astype(bool)].iloc[0]
                own = v[(v["layer"] == layer) & (v["selector"] == t.selector)].iloc[0]
                start = html.index(f'id="{block}"')
                line = html[start:html.index("</p>", html.index(f'data-layer="{layer}"', start))]
                assert f"norm {ref['gain_change_norm_per_alpha']:.3g}·α" in line
                assert f"gain change {own['gain_change_norm_per_alpha']:.3g}·α" in line
    assert any(moved), "some shown number differs from the unmoved model's (the test reads real values)"


def test_caption_renders():
    """The report caption renders as `snakemake --report` renders it (Jinja, then reStructuredText)."""
    from types import SimpleNamespace

    import jinja2
    from docutils.core import publish_parts

    snakemake = SimpleNamespace(wildcards=SimpleNamespace(model="organism", corpus="synthetic"),
                                params=SimpleNamespace(selectors=["mad", "cas"], fraction=0.05, top_neurons=20, clips=5))
    caption = (Path(__file__).resolve().parents[1] / "workflow/report/browser.rst").read_text()
    text = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(caption).render(snakemake=snakemake)
    html = publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 5})["body"]
    assert "5 %" in html and "top 20 neurons" in html and "results/browser/organism/synthetic" in html


class Dom(HTMLParser):
    """Elements of a page as (tag, attrs) in document order, plus the text of each element id."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def all(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag]


def _chrome(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]
    proc = subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def render(chromium: str, page: Path, profile: Path, screenshot: Path | None = None) -> Dom:
    """The DOM chromium builds from the page (and, if asked, a screenshot of it)."""
    if screenshot is not None:
        _chrome(chromium, profile, f"--screenshot={screenshot}", "--window-size=1300,1500", "--hide-scrollbars",
                page.as_uri())
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return Dom(_chrome(chromium, profile, "--dump-dom", page.as_uri()).stdout)


def _target(page: Path, ref: str) -> Path:
    parts = urlsplit(ref)
    assert not parts.scheme and not parts.netloc and not ref.startswith("/"), f"{page.name}: non-relative {ref!r}"
    return (page.parent / unquote(parts.path)).resolve() if parts.path else page


def test_site_in_chromium_index_neuron_pages_figures_audio_links(site, chromium, tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    profile = tmp_path / "profile"
    index = site / "index.html"
    dom = render(chromium, index, profile, shots / "index.png")
    # Figures: inline SVG in the rendered DOM, one bar chart per (selector, emotion), gain curves per study.
    svgs = [a for a in dom.all("svg")]
    assert sum("bars" in a.get("class", "") for a in svgs) == len(SELECTORS) * len(LABELS)
    assert sum("gain" in a.get("class", "") for a in svgs) == len(SELECTORS) * len(LABELS) * len(EVAL_CORPORA)
    assert len(dom.all("rect")) > len(SELECTORS) * len(LABELS), "bars are drawn"
    text = index.read_text()
    for e in EVAL_CORPORA:
        assert text.count(f"evaluated on <b>{e}</b>") == len(SELECTORS) * len(LABELS)
    assert len(dom.all("table")) >= len(SELECTORS) * len(LABELS) * len(EVAL_CORPORA), "Δrecall rows"
    neuron_links = [a["href"] for a in dom.all("a") if a.get("href", "").startswith("neurons/")]
    assert len(neuron_links) == len(SELECTORS) * len(LABELS) * TOP

    # Follow the first link, as a reader clicking the best neuron of the first card.
    page = _target(index, neuron_links[0])
    ndom = render(chromium, page, profile, shots / "neuron.png")
    boxes = [a for a in ndom.all("svg") if "boxes" in a.get("class", "")]
    assert len(boxes) == 2, "activation and P(a>0) per emotion"
    audios = ndom.all("audio")
    assert len(audios) == 2 * CLIPS and all("controls" in a for a in audios)
    for a in audios:
        clip = _target(page, a["src"])
        assert clip.is_file() and clip.is_relative_to(site.resolve()), a["src"]
        assert clip.read_bytes()[:4] == b"fLaC"

    # Crawl every page reachable from the index: no broken relative link, every audio inside the site.
    seen, todo, clips = set(), [index.resolve()], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        d = Dom(p.read_text())
        for tag, attr in (("a", "href"), ("link", "href"), ("audio", "src"), ("img", "src"), ("script", "src")):
            for a in d.all(tag):
                if attr not in a:
                    continue
                t = _target(p, a[attr])
                assert t.exists() and t.is_relative_to(site.resolve()), f"{p.name}: broken {a[attr]!r}"
                if tag == "audio":
                    clips.add(t)
                if t.suffix == ".html":
                    todo.append(t)
    pages = sorted(site.glob("neurons/*.html"))
    assert set(pages) <= seen and len(pages) >= TOP
    # each clip is copied once, and nothing else lies in the site
    assert clips == {p.resolve() for p in site.glob("clips/**/*.flac")}
    assert {p.suffix for p in site.rglob("*") if p.is_file()} == {".html", ".css", ".flac"}

    # Chromium decodes the copied FLAC (a probe page next to the site reads the clip's duration).
    probe = site.parent / "probe.html"
    src = Path(os.path.relpath(next(iter(clips)), probe.parent)).as_posix()
    probe.write_text(f'<audio src="{src}" preload="auto" onloadedmetadata="document.title=\'d=\'+this.duration" '
                     'onerror="document.title=\'error\'"></audio>')
    proc = _chrome(chromium, profile, "--dump-dom", "--virtual-time-budget=5000", probe.as_uri())
    title = re.search(r"<title>(.*?)</title>", proc.stdout)
    assert title and title.group(1).startswith("d=") and float(title.group(1)[2:]) > 0.3, proc.stdout[:500]

    SHOTS.mkdir(parents=True, exist_ok=True)
    for shot in shots.iterdir():
        shutil.copyfile(shot, SHOTS / shot.name)
