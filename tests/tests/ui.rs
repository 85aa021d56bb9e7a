//! The compile-fail suite: one mistake per file in `tests/ui/`, each with
//! the `.stderr` the compiler prints for it. Regenerate the expected output
//! with `TRYBUILD=overwrite cargo test -p checkpoint-tests --test ui`, then
//! read every changed `.stderr` as a user would.

#[rustversion::attr(not(stable(1.95)), ignore = "ui output is pinned to rustc 1.95")]
#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
