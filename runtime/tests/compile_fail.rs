//! Misuses of `#[remora::remote]` fail to compile with a message that says what to
//! write instead, pointing at the offending part of the trait. The expected messages
//! are the `.stderr` files next to each case in `tests/ui/`; regenerate them with
//! `TRYBUILD=overwrite cargo test -p remora --test compile_fail` and read the diff.

#[test]
fn remote_trait_misuses_are_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
