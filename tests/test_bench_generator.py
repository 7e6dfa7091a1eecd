from xpgan.bench.generator import bench_generator


def test_generator_bench_times_both_architectures():
    lines = []
    out = bench_generator(ct_shape=(8, 32, 32), img_res=32, batch=2, cxr_batch=2, repeats=1, log=lines.append)
    for arch in ("projected", "vector"):
        assert out[f"g_{arch}_s"] > 0 and out[f"step_{arch}_s"] > out[f"g_{arch}_s"] * 0.5
    assert out["step_ratio_projected_over_vector"] > 0
    assert "projected / vector" in lines[-1]
