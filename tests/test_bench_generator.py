from xpgan.bench.generator import VARIANTS, bench_generator


def test_generator_bench_times_every_variant_and_mode_drr():
    lines = []
    out = bench_generator(ct_shape=(8, 32, 32), img_res=32, batch=2, cxr_batch=2, repeats=1, log=lines.append)
    assert set(out["step_s"]) == set(VARIANTS) | {"mode drr"}
    assert all(v > 0 for v in out["step_s"].values()) and all(v > 0 for v in out["step_ratio_over_drr"].values())
    assert any("x mode drr" in line for line in lines)
