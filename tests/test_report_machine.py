"""The CPU label that a sweep records with each row tells hosts of one model name apart."""

from lmpress.report.machine import cpu_label


def test_cpu_label_tells_apart_machines_of_one_model_name():
    def info(family, model, flags):
        return (
            f"processor\t: 0\ncpu family\t: {family}\nmodel\t\t: {model}\n"
            f"model name\t: AMD EPYC\nflags\t\t: fpu sse2 {flags}\n\n"
            "processor\t: 1\ncpu family\t: 99\nmodel name\t: other\n"
        )

    zen4 = cpu_label(info(25, 17, "avx2 fma avx512f"))
    assert zen4 == "AMD EPYC (AVX-512, family 25 model 17)"
    assert cpu_label(info(26, 2, "avx2 fma avx512f")) != zen4
    assert cpu_label(info(25, 1, "avx2 fma")) == "AMD EPYC (AVX2, family 25 model 1)"
    assert cpu_label("model name\t: Neoverse\nFeatures\t: fp asimd\n") == "Neoverse"
    assert cpu_label("") == ""
