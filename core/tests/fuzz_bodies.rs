//! The fuzz targets' bodies (`core/fuzz/bodies.rs`: the whole `Call` machine, the SSE
//! decoder) as a bounded proptest, so the normal test suite runs
//! them on every change; `cargo fuzz run <target>` in `core/` runs them unbounded.

#[path = "../fuzz/bodies.rs"]
mod bodies;

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn the_call_machine_survives_any_script(data in prop::collection::vec(any::<u8>(), 0..1_500)) {
        bodies::call_machine(&data);
    }

    #[test]
    fn the_sse_decoder_survives_any_bytes(data in prop::collection::vec(any::<u8>(), 0..1_500)) {
        bodies::sse_decoder(&data);
    }
}

/// Inputs shaped like real traffic, which random bytes rarely reach.
#[test]
fn seeds() {
    let sse = b"data: {\"id\":\"a\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[]}\n\ndata: {\"object\":\"error\",\"message\":\"Bearer sk-FUZZ-SECRET-Qz7Wm3Kp9Xv2Ly\"}\n\ndata: [DONE]\n\n";
    bodies::sse_decoder(sse);
    for seed in 0u8..=255 {
        let script: Vec<u8> = (0..400u32)
            .map(|i| seed.wrapping_mul(31).wrapping_add((i * 7) as u8))
            .collect();
        bodies::call_machine(&script);
    }
}
