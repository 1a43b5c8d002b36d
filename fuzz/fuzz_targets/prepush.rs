//! `checkdef::prepush::parse_stdin` on arbitrary text: never panics, every accepted update is
//! consistent (one hash kind for both object ids, a delete has the zero local id, the remote ref
//! holds no space), each one prints back as a line that parses to itself, and the fields are
//! read from the right: the same line with spaces added inside the local ref (git writes the
//! push source as typed, `HEAD^{/fix bug}`) parses to the same update with that local ref.
#![no_main]

use checkdef::prepush::parse_stdin;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(updates) = parse_stdin(text) else {
        return;
    };
    assert!(updates.len() <= text.split('\n').count());
    for u in &updates {
        assert_eq!(u.local_oid.kind(), u.remote_oid.kind());
        if u.is_delete() {
            assert!(u.local_oid.is_null());
        }
        let _ = (u.is_create(), u.is_tag(), u.is_branch(), u.hash_kind());
        assert!(!u.remote_ref.contains(' '));
        let line = u.to_string();
        assert_eq!(
            parse_stdin(&line).expect("a printed update parses"),
            vec![u.clone()]
        );
        if !u.is_delete() {
            let spaced = checkdef::prepush::RefUpdate {
                local_ref: format!("{} ^{{/a  b}} ", u.local_ref),
                ..u.clone()
            };
            assert_eq!(
                parse_stdin(&spaced.to_string()).expect("a local ref with spaces parses"),
                vec![spaced]
            );
        }
    }
});
