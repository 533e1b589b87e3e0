//! course-service's listing query strings (user input straight from the URL): nothing
//! panics, and an accepted query's canonical form parses back to itself (the cache key is
//! stable).
#![no_main]

use course_service::query::ListQuery;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(query) = ListQuery::parse(raw) {
        let canonical = query.canonical();
        let again = ListQuery::parse(&canonical).expect("a canonical query parses");
        assert_eq!(again.canonical(), canonical);
    }
});
