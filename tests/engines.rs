//! The engine axis in any build: the flag and the scenario field, the variant key, and
//! refusals (an unknown engine, a precision an engine cannot make, a setting an engine
//! would ignore, llama.cpp asked of a build without it). The llama.cpp engine's own tests
//! are tests/llama_cpp_engine.rs (cargo feature llama-cpp).

mod common;

use common::quantbench;
use quantbench::engine::{variant_key, EngineKind};
use quantbench::precision::{Precision, Quantization};
use quantbench::scenario::Scenario;

#[test]
fn engines_parse_and_name_themselves() {
    for e in EngineKind::ALL {
        assert_eq!(e.name().parse::<EngineKind>().unwrap(), e);
    }
    assert_eq!(
        "LLAMA-CPP".parse::<EngineKind>().unwrap(),
        EngineKind::LlamaCpp
    );
    let e = "vllm".parse::<EngineKind>().unwrap_err().to_string();
    assert!(
        e.contains("unknown engine 'vllm'") && e.contains("quantbench, llama.cpp"),
        "{e}"
    );
}

#[test]
fn a_scenario_expands_engines_times_precisions_and_keys_say_the_engine() {
    let s = Scenario::parse(
        "name = \"e\"\nengines = [\"quantbench\", \"llama.cpp\"]\nprecisions = [\"f32\", \"q8_0\"]\n",
        "e.toml",
    )
    .unwrap();
    let labels: Vec<String> = s.variants().iter().map(|v| v.label()).collect();
    assert_eq!(
        labels,
        ["f32/all", "q8_0/all", "llama.cpp/f32", "llama.cpp/q8_0"],
        "the own engine's keys are what they were before engines were an axis"
    );
    assert_eq!(
        variant_key(
            EngineKind::LlamaCpp,
            Quantization::new("q4_k_m".parse().unwrap())
        ),
        "llama.cpp/q4_k_m"
    );
    // A record written before engines were an axis reads as quantbench's own.
    assert_eq!(EngineKind::default(), EngineKind::Quantbench);
    assert!(matches!(
        "iq4_xs".parse::<Precision>().unwrap(),
        Precision::Mix(_)
    ));
}

#[test]
fn scenarios_refuse_what_their_engines_would_ignore() {
    let bad = |text: &str, want: &[&str]| {
        let e = format!("{:#}", Scenario::parse(text, "s.toml").unwrap_err());
        for w in want {
            assert!(e.contains(w), "{w:?} not in: {e}");
        }
    };
    bad(
        "name = \"e\"\nengines = [\"llama.cpp\", \"llama.cpp\"]\n",
        &["engines", "listed twice"],
    );
    bad(
        "name = \"e\"\nengines = [\"llama.cpp\"]\npolicy = \"linear\"\n",
        &["policy", "llama.cpp", "ignored"],
    );
    bad(
        "name = \"e\"\nengines = [\"llama.cpp\"]\nrest = \"f16\"\n",
        &["rest", "ignored"],
    );
    bad(
        "name = \"e\"\nengines = [\"ollama\"]\n",
        &["unknown engine 'ollama'"],
    );
    bad(
        "name = \"e\"\nengines = [\"llama.cpp\"]\n[engine]\nthreads = 0\n",
        &["engine.threads", "from 1"],
    );
    bad("name = \"e\"\nrounds = 0\n", &["rounds", "from 1 to 1000"]);
    bad("name = \"e\"\nrounds = 1001\n", &["rounds", "got 1001"]);
    bad(
        "name = \"e\"\n[engine]\nmmap = false\n",
        &["'mmap' is llama.cpp's", "ignored"],
    );
}

#[test]
fn the_cli_refuses_bad_engines_and_settings_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    let out = out.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--model",
            "synthetic:tiny",
            "--new-tokens",
            "2",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--no-quality",
            "--quiet",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        quantbench(&args)
    };
    let (code, _, err) = run(&["--engine", "tgi"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown engine 'tgi'"), "{err}");

    // A mix the engine makes only with an importance matrix: exit 2 naming it.
    let (code, _, err) = run(&["--precisions", "iq2_xs"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("precision iq2_xs") && err.contains("--imatrix"),
        "{err}"
    );

    // A setting the own engine has not: refused, not dropped.
    let (code, _, err) = run(&["--flash-attention", "on"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("flash_attention") && err.contains("ignored"),
        "{err}"
    );

    if !EngineKind::LlamaCpp.is_built() {
        let (code, _, err) = run(&["--engine", "llama.cpp"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--features llama-cpp"), "{err}");
    }
    assert!(
        !std::path::Path::new(out).exists(),
        "a refused run writes nothing"
    );
}
