"""``simulate --pileup MU`` and the simple-cut hit filter (``pipeline.hitcuts``).

References, each independent of the code under test:

* the users' sample (``shared/reference/upstream-workflow.md``, re-typed here): 725,835 hits in 100
  events at ⟨μ⟩ = 200 (7,258 per event), 54 of them on muons, 25.7 ± 8.4 hits per muon, technology
  shares MDT 64.6 %, TGC 17.7 %, RPC 15.4 %, sTGC 1.3 %, MM 1.0 %; times about −1000…20000 ns;
* the simulator's r–t relation written out here (700 ns · (r / 15 mm)^1.3) and c;
* a per-hit Python loop for the cuts and their metrics.

Tolerances (stated in docs/physics.md too): hits per event ±10 % of 7,258 × MU/200; muon hits per event and
mean hits per muon ±15 % (the simulator gives ≈ 50 and ≈ 29); the spread of hits per muon between 8.4/3
and 8.4 (the simulator's is narrower, ≈ 4–5); technology shares ±3 percentage points (MDT, TGC, RPC) and
±1.5 (sTGC, MM).
"""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest
import uproot
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.hitcuts import CutParams, HitColumns, metrics, scan, select
from pipeline.simulate import SimConfig, simulate_events

REF_HITS_PER_EVENT = 725_835 / 100
REF_MUON_HITS_PER_EVENT = 5_414 / 100
REF_HITS_PER_MUON, REF_HITS_PER_MUON_SD = 25.7, 8.4
REF_SHARES = {0: 0.646, 3: 0.177, 2: 0.154, 4: 0.013, 5: 0.010}  # MDT, TGC, RPC, sTGC, MM
C_MM_NS = 299.792458
MUON, CAVERN, DELTA, SEGMENT, BURST = 0, 1, 2, 3, 4  # truth_source codes (docs/physics.md)


def _flat(a: ak.Array, name: str) -> np.ndarray:
    return ak.flatten(a[name]).to_numpy()


def _event_index(a: ak.Array) -> np.ndarray:
    return np.repeat(np.arange(len(a)), ak.num(a["spacePoint_time"]).to_numpy())


def _columns(a: ak.Array) -> HitColumns:
    f = lambda k: _flat(a, f"spacePoint_{k}")  # noqa: E731
    return HitColumns(_event_index(a), f("time"), f("globEdgeLowX"), f("globEdgeLowY"), f("globEdgeLowZ"),
                      f("technology"), f("stationIndex"), f("stationPhi"), f("stationEta"), f("truthLink"))


@pytest.fixture(scope="module")
def pu200() -> ak.Array:
    return simulate_events(100, seed=21, config=SimConfig(pileup=200), truth=True)


def _time_of_flight(a: ak.Array) -> np.ndarray:
    x, y, z = (_flat(a, f"spacePoint_globEdgeLow{c}").astype(np.float64) for c in "XYZ")
    return np.sqrt(x * x + y * y + z * z) / C_MM_NS


@pytest.mark.parametrize("mu", [200, 50])
def test_hits_per_event_scale_with_mu_and_fluctuate(pu200, mu: int) -> None:
    a = pu200 if mu == 200 else simulate_events(60, seed=3, config=SimConfig(pileup=mu))
    n = ak.num(a["spacePoint_time"]).to_numpy()
    expected = REF_HITS_PER_EVENT * mu / 200
    assert abs(n.mean() / expected - 1) < 0.10, (n.mean(), expected)
    # per-event Poisson counts: at least Poisson's spread, and not wildly more (bursts add some)
    assert math.sqrt(expected) * 0.8 < n.std() < math.sqrt(expected) * 4, n.std()


def test_hits_per_muon_and_muon_hits_per_event_match_the_users_sample(pu200) -> None:
    link = _flat(pu200, "spacePoint_truthLink")
    event = _event_index(pu200)
    on = link >= 0
    per_muon = np.unique(event[on] * 100 + link[on], return_counts=True)[1]
    assert abs(per_muon.mean() / REF_HITS_PER_MUON - 1) < 0.15, per_muon.mean()
    # the simulator's muons are more alike than real ones (one η/pT mix, no dead regions): narrower spread
    assert REF_HITS_PER_MUON_SD / 3 < per_muon.std() < REF_HITS_PER_MUON_SD, per_muon.std()
    assert abs(on.sum() / len(pu200) / REF_MUON_HITS_PER_EVENT - 1) < 0.15


def test_technology_shares_match_the_users_sample(pu200) -> None:
    tech = _flat(pu200, "spacePoint_technology")
    on = _flat(pu200, "spacePoint_truthLink") >= 0
    for label, sel in (("all hits", np.ones_like(on)), ("muon hits", on), ("background", ~on)):
        for code, share in REF_SHARES.items():
            tol = 0.03 if share > 0.1 else 0.015
            got = float(np.mean(tech[sel] == code))
            assert abs(got - share) < tol, (label, code, got, share)
    assert set(np.unique(tech)) == set(REF_SHARES)


def test_time_spread_mostly_out_of_time_and_drift_radius_consistent_with_time(pu200) -> None:
    t = _flat(pu200, "spacePoint_time").astype(np.float64)
    tech = _flat(pu200, "spacePoint_technology")
    src = _flat(pu200, "truth_source")
    drift = _flat(pu200, "spacePoint_driftR").astype(np.float64)
    dt = t - _time_of_flight(pu200)
    assert t.min() >= -1000 and t.max() <= 20000
    assert t.min() < -900 and t.max() > 18000  # the range is used, as in real dumps
    mdt = tech == 0
    rt = 700.0 * (np.minimum(drift, 15.0) / 15.0) ** 1.3  # ns
    window = np.where(mdt, (dt > -25) & (dt < 725), np.abs(dt) < 25)
    assert window[src == MUON].mean() > 0.999
    bkg_in = window[src != MUON].mean()
    assert 0.10 < bkg_in < 0.35, bkg_in  # most background is out of time
    assert np.median(t[src != MUON]) > 2000
    # prompt strip hits (RPC, TGC, sTGC, MM): time − s/c ≈ 0 for the in-time 10 % of the cavern hits
    # (+0.1 % of slow ones by chance); MDT hits are left out: a hit from another crossing whose drift time
    # still lies in 0..700 ns looks in time, as in a real detector
    frac = (np.abs(dt) < 12)[(src == CAVERN) & ~mdt].mean()
    assert 0.09 < frac < 0.115, frac
    # MDT: the reported radius is the radius of the hit's drift time (0..700 ns), as a detector derives it
    for sel in (mdt & (src == MUON), mdt & (src != MUON)):
        err = np.abs(rt[sel] - np.clip(dt[sel], 0, 700))
        assert np.quantile(err, 0.95) < 15, np.quantile(err, 0.95)


def test_truth_links_point_to_muons_and_background_links_to_none(pu200) -> None:
    link = pu200["spacePoint_truthLink"]
    n_mu = ak.num(pu200["truthMuon_pt"])
    assert ak.all((link >= -1) & (link < n_mu))
    src = _flat(pu200, "truth_source")
    flat = ak.flatten(link).to_numpy()
    assert np.all((flat >= 0) == (src == MUON))
    assert {CAVERN, DELTA, SEGMENT, BURST} <= set(np.unique(src))
    # readout order: muon hits are spread through their event, not first
    rank = ak.flatten(ak.local_index(link) / ak.num(link)).to_numpy()
    assert 0.3 < rank[flat >= 0].mean() < 0.7


def _nearest_muon_distance(a: ak.Array, src: np.ndarray) -> np.ndarray:
    """Per background hit: distance (mm) of its Low edge to the nearest muon hit's Low edge in its event."""
    pos = np.stack([_flat(a, f"spacePoint_globEdgeLow{c}").astype(np.float64) for c in "XYZ"], axis=1)
    event = _event_index(a)
    out = np.full(len(src), np.inf)
    for e in range(len(a)):
        idx = np.flatnonzero(event == e)
        mu, bg = idx[src[idx] == MUON], idx[src[idx] != MUON]
        if len(mu):
            out[bg] = np.sqrt(((pos[bg, None, :] - pos[None, mu, :]) ** 2).sum(-1)).min(axis=1)
    return out


def test_delta_electron_hits_lie_beside_muon_hits(pu200) -> None:
    src = _flat(pu200, "truth_source")
    d = _nearest_muon_distance(pu200, src)
    delta, cavern = d[src == DELTA], d[src == CAVERN]
    assert len(delta) > 100
    # one or two tubes (30 mm) or one strip (≤ 30 mm) away in the same cell
    assert np.mean(delta <= 61) > 0.95, np.quantile(delta, [0.5, 0.95])
    assert np.mean(cavern <= 61) < 0.01  # uniform hits rarely land there
    assert np.median(cavern) > 1000


def test_fake_segments_and_bursts_have_their_structure(pu200) -> None:
    h = _columns(pu200)
    src = _flat(pu200, "truth_source")
    from pipeline.hitcuts import in_time, road_counts

    window = in_time(h, 25, 750)
    road = road_counts(h, window, 0.05)
    # in-time segment hits line up like a muon's; in-time cavern hits mostly do not
    seg = window & (src == SEGMENT)
    cav = window & (src == CAVERN)
    assert seg.sum() > 500 and np.mean(road[seg] >= 3) > 0.9
    assert np.mean(road[cav] >= 3) < 0.3
    # a burst: many hits of one event in one station/sector/side within ~1 µs (MDT hits add their drift
    # time, 0..700 ns, to the burst's time and an exponential 50 ns spread)
    burst = np.flatnonzero(src == BURST)
    key = h.event[burst] * 10_000 + h.station_index[burst] * 100 + h.station_phi[burst] * 2 + (h.station_eta[burst] > 0)
    groups, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    assert counts.max() >= 10 and np.median(counts[inverse]) >= 10
    big = np.flatnonzero(counts >= 10)
    t = h.time[burst]
    spans = [np.ptp(t[inverse == g]) for g in big]
    assert np.median(spans) < 1100, np.median(spans)
    cavern = np.flatnonzero(src == CAVERN)
    assert np.median([np.ptp(h.time[cavern[h.event[cavern] == e]][:30]) for e in range(20)]) > 5000


def test_same_seed_same_arrays_different_seed_differs() -> None:
    cfg = SimConfig(pileup=200)
    a = simulate_events(40, seed=4, config=cfg)
    b = simulate_events(40, seed=4, config=cfg)
    c = simulate_events(40, seed=5, config=cfg)
    for f in a.fields:
        assert ak.array_equal(a[f], b[f]), f
    assert not ak.array_equal(a["spacePoint_time"], c["spacePoint_time"])


def test_pileup_zero_is_the_default_output(tmp_path) -> None:
    arrays = []
    for extra in ([], ["--pileup", "0"]):
        out = tmp_path / f"s{len(extra)}.root"
        res = CliRunner().invoke(main, ["simulate", str(out), "--events", "50", "--seed", "9",
                                        "--background-per-event", "30", "-q", *extra])
        assert res.exit_code == 0, res.output
        with uproot.open(out) as f:
            arrays.append(f["MuonHitDump"].arrays())
    for f in arrays[0].fields:
        assert ak.array_equal(arrays[0][f], arrays[1][f]), f


@pytest.mark.parametrize(("args", "needle"), [
    (["--pileup", "-1"], "Invalid value for '--pileup'"),
    (["--pileup", "nan"], "Invalid value for --pileup: nan is not a finite number"),
    (["--pileup", "inf"], "Invalid value for '--pileup': inf is not in the range 0<=x<=1000"),
    (["--pileup", "1001"], "Invalid value for '--pileup': 1001.0 is not in the range 0<=x<=1000"),
    (["--pileup", "200", "--background-per-event", "10"], "--background-per-event and --pileup exclude"),
])
def test_bad_pileup_options_exit_2_without_traceback(tmp_path, args: list[str], needle: str) -> None:
    res = CliRunner().invoke(main, ["simulate", str(tmp_path / "x.root"), "-n", "5", *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x.root").exists()


def test_convert_and_validate_a_pileup_dump_and_cut_its_columns(tmp_path) -> None:
    raw, ds = tmp_path / "pu.root", tmp_path / "ds"
    runner = CliRunner()
    res = runner.invoke(main, ["simulate", str(raw), "-n", "12", "--seed", "1", "--pileup", "200", "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["convert", str(raw), "--output", str(ds)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["validate", str(ds)])
    assert res.exit_code == 0 and "OK" in res.output, res.output
    from pipeline.dataset import read_dataset

    cols = HitColumns.from_table(read_dataset(str(ds), columns=["hits"]))
    assert cols.time.max() > 15000 and cols.time.min() < -500  # real-detector time range survives
    assert len(cols.time) / (cols.event.max() + 1) > 6000
    keep = select(cols, CutParams(window_ns=25, road_eta=0.05, min_compatible=2))
    m = metrics(keep, cols.event, cols.truth_link)
    assert m["efficiency"] > 0.95 and m["purity"] > 0.03 and m["rejection"] > 0.8


# ---- the simple cuts against a per-hit Python loop ------------------------------------------------

def _slow_keep(h: HitColumns, p: CutParams) -> np.ndarray:
    n = len(h.time)
    dt = [float(h.time[i]) - math.sqrt(float(h.x[i]) ** 2 + float(h.y[i]) ** 2 + float(h.z[i]) ** 2) / C_MM_NS
          for i in range(n)]
    late = [p.window_ns + (p.mdt_drift_ns if h.technology[i] == 0 else 0.0) for i in range(n)]
    ok = [-p.window_ns <= dt[i] <= late[i] for i in range(n)]
    if p.max_chamber_hits is not None:
        count: dict[tuple, int] = {}
        ch = [(h.event[i], h.station_index[i], h.station_phi[i], h.station_eta[i]) for i in range(n)]
        for i in range(n):
            if ok[i]:
                count[ch[i]] = count.get(ch[i], 0) + 1
        ok = [ok[i] and count[ch[i]] <= p.max_chamber_hits for i in range(n)]
    if p.min_compatible <= 1:
        return np.array(ok)
    eta = [math.asinh(float(h.z[i]) / math.hypot(float(h.x[i]), float(h.y[i]))) for i in range(n)]
    grp = [(h.event[i], h.station_index[i], h.station_phi[i], h.station_eta[i] >= 0) for i in range(n)]
    members: dict[tuple, list[int]] = {}
    for i in range(n):
        if ok[i]:
            members.setdefault(grp[i], []).append(i)
    keep = np.zeros(n, dtype=bool)
    for i in range(n):
        if ok[i]:
            c = sum(1 for j in members[grp[i]] if abs(eta[i] - eta[j]) <= p.road_eta)
            keep[i] = c >= p.min_compatible
    return keep


def _slow_metrics(keep: np.ndarray, event: np.ndarray, link: np.ndarray) -> dict[str, float]:
    mu = [i for i in range(len(keep)) if link[i] >= 0]
    kept_mu = sum(1 for i in mu if keep[i])
    before: dict[tuple, int] = {}
    after: dict[tuple, int] = {}
    for i in mu:
        key = (int(event[i]), int(link[i]))
        before[key] = before.get(key, 0) + 1
        after[key] = after.get(key, 0) + int(keep[i])
    eligible = [k for k, v in before.items() if v >= 3]
    n_bkg = len(keep) - len(mu)
    bkg_kept = int(keep.sum()) - kept_mu
    return {"efficiency": kept_mu / len(mu), "purity": kept_mu / keep.sum(), "rejection": 1 - bkg_kept / n_bkg,
            "hits_per_event": keep.sum() / len(set(event.tolist())),
            "muons_kept": sum(after[k] >= 3 for k in eligible) / len(eligible)}


@pytest.fixture(scope="module")
def tiny() -> HitColumns:
    return _columns(simulate_events(4, seed=8, config=SimConfig(pileup=8)))


@pytest.mark.parametrize("params", [
    CutParams(window_ns=25, min_compatible=1),
    CutParams(window_ns=10, road_eta=0.02, min_compatible=2),
    CutParams(window_ns=25, road_eta=0.05, min_compatible=3),
    CutParams(window_ns=50, road_eta=0.1, min_compatible=5, max_chamber_hits=6),
])
def test_cuts_and_metrics_equal_a_per_hit_loop(tiny, params: CutParams) -> None:
    fast = select(tiny, params)
    slow = _slow_keep(tiny, params)
    assert np.array_equal(fast, slow)
    assert 0 < fast.sum() < len(fast)
    got = metrics(fast, tiny.event, tiny.truth_link)
    want = _slow_metrics(slow, tiny.event, tiny.truth_link)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-12), k


def test_scan_rows_equal_select_at_each_point(tiny) -> None:
    rows = scan(tiny, [10, 25], [0.02, 0.05], [1, 3], max_chamber_hits=[None, 8])
    assert len(rows) == 2 * 2 * 2 * 2
    for r in rows:
        p = CutParams(r["window_ns"], r["mdt_drift_ns"], r["road_eta"], r["min_compatible"], r["max_chamber_hits"])
        want = _slow_metrics(_slow_keep(tiny, p), tiny.event, tiny.truth_link)
        assert r["purity"] == pytest.approx(want["purity"], rel=1e-12)
        assert r["efficiency"] == pytest.approx(want["efficiency"], rel=1e-12)
