import numpy as np

from jaxrec.mergerec import report

ROWS = [
    {"method": "fine-tuned", "domain": "A", "split": "test", "recall@10": 0.20},
    {"method": "fine-tuned", "domain": "B", "split": "test", "recall@10": 0.10},
    {"method": "ties", "domain": "A", "split": "test", "recall@10": 0.10},
    {"method": "ties", "domain": "B", "split": "test", "recall@10": 0.12},
    {"method": "ties", "domain": "A", "split": "val", "recall@10": 0.99},
]


def test_pivot_normalises_to_reference_per_domain():
    methods, domains, table = report.pivot(ROWS, "recall@10", reference="fine-tuned")
    assert methods == ["fine-tuned", "ties"] and domains == ["A", "B"]
    np.testing.assert_allclose(table, [[100.0, 100.0], [50.0, 120.0]])


def test_markdown_table_has_average_and_bold_best(tmp_path):
    md = report.markdown_table(ROWS, "recall@10", reference="fine-tuned")
    lines = md.splitlines()
    assert lines[0] == "| recall@10 (%) | A | B | Avg. |"
    assert lines[2] == "| fine-tuned | **100.0** | 100.0 | **100.0** |"
    assert lines[3] == "| ties | 50.0 | **120.0** | 85.0 |"
    path = report.write_csv(ROWS, tmp_path / "r.csv")
    assert path.read_text().splitlines()[0] == "method,domain,split,recall@10"


def test_plots_write_png(tmp_path):
    traj = {
        "domain-wise": np.linspace(0, 1, 12).reshape(6, 2),
        "layer-wise": np.random.default_rng(0).normal(size=(6, 3, 2)),
    }
    p = report.plot_coefficients(traj, ["A", "B"], tmp_path / "c.png")
    q = report.plot_curves({"adamerging": {"entropy": np.arange(5.0)}}, tmp_path / "e.png")
    r = report.plot_sensitivity([1, 10, 100], {"avg": [1, 2, 3]}, tmp_path / "s.png")
    for f in (p, q, r):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 2000


def test_markdown_table_shows_std_over_seeds_including_the_average():
    # two seeds of a learned run: per-seed values in ``<metric>_seeds``, the mean in ``<metric>``
    seeds = {"A": [0.10, 0.14], "B": [0.12, 0.10]}
    rows = ROWS[:2] + [
        {
            "method": "mergerec",
            "domain": d,
            "split": "test",
            "recall@10": float(np.mean(v)),
            "recall@10_seeds": v,
        }
        for d, v in seeds.items()
    ]
    lines = report.markdown_table(rows, "recall@10", reference="fine-tuned").splitlines()
    # % of fine-tuned per seed: A 50 / 70, B 120 / 100; averages per seed 85 / 85
    sa, sb = np.std([50.0, 70.0], ddof=1), np.std([120.0, 100.0], ddof=1)
    assert lines[3] == f"| mergerec | 60.0 ± {sa:.1f} | **110.0 ± {sb:.1f}** | 85.0 ± 0.0 |"
    assert lines[2] == "| fine-tuned | **100.0** | 100.0 | **100.0** |"  # no seeds, no ±
    absolute = report.markdown_table(rows, "recall@10").splitlines()
    assert absolute[3].startswith(f"| mergerec | 0.1200 ± {np.std([0.1, 0.14], ddof=1):.4f} |")


def test_moving_average_is_the_window_mean_at_the_window_centre():
    x, y = report.moving_average([1.0, 2.0, 3.0, 4.0, 10.0], 2)
    np.testing.assert_allclose(x, [0.5, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(y, [1.5, 2.5, 3.5, 7.0])
    x, y = report.moving_average([5.0, 7.0], 9)  # window capped at the length
    np.testing.assert_allclose((x, y), ([0.5], [6.0]))
