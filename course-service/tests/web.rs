//! The web page in a real headless Chromium, through our proxy over HTTP and HTTPS (its
//! self-signed development certificate), against a real SecantusDB: what a person sees when
//! browsing, searching, filtering and paging, and when an admin adds, edits and deletes.

mod support;

use reqwest::Method;
use serde_json::{json, Value};
use support::browser::Browser;
use support::proxy::Proxy;
use support::{TestApp, TOKEN};

fn course(title: &str, level: &str, tags: &[&str]) -> Value {
    json!({
        "title": title,
        "description": format!("All about {title}."),
        "instructor": "Grace Hopper",
        "duration_minutes": 90,
        "level": level,
        "tags": tags,
        "price_cents": 1999,
    })
}

/// Clicks the first element matching `selector`.
async fn click(browser: &mut Browser, selector: &str) {
    let selector = serde_json::to_string(selector).expect("JSON string");
    browser
        .eval(&format!("document.querySelector({selector}).click()"))
        .await;
}

/// Sets a form control's value, as typing or choosing would.
async fn fill(browser: &mut Browser, selector: &str, value: &str) {
    let (selector, value) = (
        serde_json::to_string(selector).expect("JSON string"),
        serde_json::to_string(value).expect("JSON string"),
    );
    browser
        .eval(&format!(
            "(() => {{ const e = document.querySelector({selector}); e.value = {value}; \
             e.dispatchEvent(new Event('input', {{ bubbles: true }})); }})()"
        ))
        .await;
}

async fn count(browser: &mut Browser, selector: &str) -> usize {
    browser.texts(selector).await.len()
}

async fn wait_for_titles(browser: &mut Browser, what: &str, n: usize) {
    browser
        .wait_for(
            what,
            &format!(
                "document.querySelectorAll('#courses li').length === {n} \
                 && document.getElementById('status').textContent !== 'Loading…'"
            ),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsing_searching_filtering_and_paging_in_chromium_through_the_proxy() {
    let app = TestApp::spawn().await;
    for i in 0..21 {
        let level = if i % 2 == 0 {
            "beginner"
        } else {
            "intermediate"
        };
        app.create(course(&format!("Bread baking {i:02}"), level, &["cooking"]))
            .await;
    }
    app.create(course(
        "Ownership in Rust",
        "advanced",
        &["rust", "systems"],
    ))
    .await;
    app.create(course(
        "Escaping <b>markup</b> & friends",
        "advanced",
        &["web"],
    ))
    .await;
    let proxy = Proxy::start(&app).await;
    let mut browser = Browser::launch().await;

    for base in proxy.urls() {
        browser.open(&format!("{base}/")).await;
        wait_for_titles(&mut browser, "the first page", 20).await;
        assert_eq!(browser.texts("#status").await, ["23 courses"], "{base}");
        assert_eq!(browser.texts("#page-info").await, ["Page 1 of 2"]);
        // Newest first: the last one created leads, its title shown as text, not markup.
        let titles = browser.texts("#courses li h2").await;
        assert_eq!(titles[0], "Escaping <b>markup</b> & friends");
        assert_eq!(count(&mut browser, "#courses b").await, 0);

        click(&mut browser, "#next").await;
        browser
            .wait_for(
                "the second page",
                "document.getElementById('page-info').textContent === 'Page 2 of 2'",
            )
            .await;
        wait_for_titles(&mut browser, "the second page's courses", 3).await;
        assert_eq!(browser.eval("location.search").await, "?page=2");
        // A link past the last page (say, after deletions) shows the last page.
        browser.open(&format!("{base}/?page=5")).await;
        wait_for_titles(&mut browser, "the last page", 3).await;
        assert_eq!(browser.eval("location.search").await, "?page=2");
        assert_eq!(browser.texts("#page-info").await, ["Page 2 of 2"]);

        fill(&mut browser, "#q", "RUST").await;
        click(&mut browser, "#filters button[type=submit]").await;
        wait_for_titles(&mut browser, "the search results", 1).await;
        assert_eq!(browser.texts("#courses li h2").await, ["Ownership in Rust"]);
        assert_eq!(browser.texts("#status").await, ["1 course"]);
        assert!(
            browser
                .eval("document.getElementById('pager').hidden")
                .await
                == json!(true)
        );

        // The address holds the search: opening it again shows the same results.
        assert_eq!(browser.eval("location.search").await, "?q=RUST");
        browser.open(&format!("{base}/?q=RUST")).await;
        wait_for_titles(&mut browser, "the search results after a reload", 1).await;
        assert_eq!(
            browser.eval("document.getElementById('q').value").await,
            "RUST"
        );

        // A misspelt search finds nothing and suggests the search that finds the course;
        // the suggestion is a link to it.
        fill(&mut browser, "#q", "ownrship").await;
        click(&mut browser, "#filters button[type=submit]").await;
        browser
            .wait_for(
                "the suggestion",
                "!document.getElementById('suggestion').hidden",
            )
            .await;
        assert_eq!(browser.texts("#status").await, ["0 courses"]);
        assert_eq!(browser.texts("#suggestion-link").await, ["ownership"]);
        assert_eq!(browser.texts("#suggestion-count").await, ["(1 course)"]);
        click(&mut browser, "#suggestion-link").await;
        wait_for_titles(&mut browser, "the suggested search's results", 1).await;
        assert_eq!(browser.texts("#courses li h2").await, ["Ownership in Rust"]);
        assert_eq!(browser.eval("location.search").await, "?q=ownership");
        assert!(
            browser
                .eval("document.getElementById('suggestion').hidden")
                .await
                == json!(true)
        );

        click(&mut browser, "#clear").await;
        wait_for_titles(&mut browser, "the unfiltered list", 20).await;

        fill(&mut browser, "#level", "intermediate").await;
        click(&mut browser, "#filters button[type=submit]").await;
        wait_for_titles(&mut browser, "intermediate courses", 10).await;
        let levels = browser.texts("#courses .level").await;
        assert!(levels.iter().all(|l| l == "intermediate"), "{levels:?}");

        // A tag on a card filters by that tag.
        click(&mut browser, "#clear").await;
        wait_for_titles(&mut browser, "the unfiltered list", 20).await;
        click(&mut browser, "#courses li:nth-child(2) .tag:nth-child(2)").await;
        wait_for_titles(&mut browser, "courses tagged systems", 1).await;
        assert_eq!(browser.eval("location.search").await, "?tag=systems");
        // Not signed in: no editing controls.
        assert_eq!(count(&mut browser, "#courses .edit").await, 0);
    }
    assert!(
        browser.exceptions().is_empty(),
        "script errors: {:?}",
        browser.exceptions()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_adds_edits_and_deletes_in_chromium_through_the_proxy() {
    let app = TestApp::spawn().await;
    app.create(course("Ownership in Rust", "advanced", &["rust"]))
        .await;
    let proxy = Proxy::start(&app).await;
    let [_, https] = proxy.urls();
    let mut browser = Browser::launch().await;
    browser.open(&format!("{https}/")).await;
    wait_for_titles(&mut browser, "the list", 1).await;

    // A wrong token is refused at the first write, and the page leaves admin mode.
    click(&mut browser, "#admin-open").await;
    fill(&mut browser, "#token", "not-the-token").await;
    click(&mut browser, "#login button[type=submit]").await;
    click(&mut browser, "#add-course").await;
    fill(&mut browser, "#editor [name=title]", "Never saved").await;
    fill(&mut browser, "#editor [name=instructor]", "Nobody").await;
    fill(&mut browser, "#editor [name=duration_minutes]", "30").await;
    click(&mut browser, "#editor-save").await;
    browser
        .wait_for(
            "the refusal",
            "document.getElementById('status').textContent.includes('token was refused')",
        )
        .await;
    assert!(
        browser
            .eval("document.getElementById('admin-open').hidden")
            .await
            == json!(false)
    );
    assert_eq!(app.get_json("/api/courses").await["total"], 1);

    click(&mut browser, "#admin-open").await;
    fill(&mut browser, "#token", TOKEN).await;
    click(&mut browser, "#login button[type=submit]").await;
    browser
        .wait_for(
            "admin mode",
            "!document.getElementById('admin-on').hidden && document.querySelectorAll('#courses .edit').length === 1",
        )
        .await;

    // An invalid course: the service's reasons, next to the fields they concern.
    click(&mut browser, "#add-course").await;
    fill(&mut browser, "#editor [name=instructor]", "Ada Lovelace").await;
    fill(&mut browser, "#editor [name=duration_minutes]", "45").await;
    click(&mut browser, "#editor-save").await;
    browser
        .wait_for(
            "the validation errors",
            "!document.getElementById('editor-problem').hidden",
        )
        .await;
    let problem = browser.texts("#editor-problem").await.join("");
    assert!(problem.contains("title"), "{problem}");
    assert_eq!(
        browser
            .eval("document.querySelector('#editor [name=title]').getAttribute('aria-invalid')")
            .await,
        "true"
    );
    assert_eq!(count(&mut browser, "#editor .field-error").await, 1);

    fill(&mut browser, "#editor [name=title]", "Async Rust").await;
    fill(&mut browser, "#editor [name=tags]", "rust, async").await;
    fill(&mut browser, "#editor [name=price]", "12.50").await;
    fill(&mut browser, "#editor [name=level]", "intermediate").await;
    fill(
        &mut browser,
        "#editor [name=description]",
        "Futures & tasks.",
    )
    .await;
    click(&mut browser, "#editor-save").await;
    browser
        .wait_for(
            "the new course",
            "document.getElementById('status').textContent === 'Added “Async Rust”.'",
        )
        .await;
    assert!(
        browser
            .eval("document.getElementById('editor').hidden")
            .await
            == json!(true)
    );
    assert_eq!(
        browser.texts("#courses li h2").await,
        ["Async Rust", "Ownership in Rust"]
    );
    let listing = app.get_json("/api/courses?q=async").await;
    let added = &listing["items"][0];
    assert_eq!(added["instructor"], "Ada Lovelace");
    assert_eq!(added["price_cents"], 1250);
    assert_eq!(added["tags"], json!(["rust", "async"]));
    assert_eq!(added["level"], "intermediate");
    let id = added["id"].as_str().expect("an id").to_string();

    // Edit: PUT with If-Match.
    click(&mut browser, "#courses li:first-child .edit").await;
    assert_eq!(
        browser
            .eval("document.querySelector('#editor [name=price]').value")
            .await,
        "12.50"
    );
    fill(&mut browser, "#editor [name=title]", "Async Rust, revised").await;
    click(&mut browser, "#editor-save").await;
    browser
        .wait_for(
            "the saved edit",
            "document.getElementById('status').textContent === 'Saved “Async Rust, revised”.'",
        )
        .await;
    let saved = app.get_json(&format!("/api/courses/{id}")).await;
    assert_eq!(saved["title"], "Async Rust, revised");
    assert_eq!(saved["version"], 2);

    // Someone else saves first: the page says so and shows their version.
    click(&mut browser, "#courses li:first-child .edit").await;
    let res = app
        .admin(Method::PATCH, &format!("/api/courses/{id}"))
        .json(&json!({ "title": "Async Rust, by someone else" }))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(res.status(), 200);
    fill(&mut browser, "#editor [name=title]", "Async Rust, mine").await;
    click(&mut browser, "#editor-save").await;
    browser
        .wait_for(
            "the conflict",
            "document.getElementById('editor-problem').textContent.includes('Someone changed this course') \
             && document.querySelector('#editor [name=title]').value === 'Async Rust, by someone else'",
        )
        .await;
    let kept = app.get_json(&format!("/api/courses/{id}")).await;
    assert_eq!(kept["title"], "Async Rust, by someone else");
    click(&mut browser, "#editor-cancel").await;
    browser
        .wait_for(
            "the list to show the other version",
            "document.querySelector('#courses li:first-child h2').textContent === 'Async Rust, by someone else'",
        )
        .await;

    // Delete takes a second click.
    click(&mut browser, "#courses li:first-child .delete").await;
    assert_eq!(
        browser.texts("#courses li:first-child .delete").await,
        ["Really delete?"]
    );
    assert_eq!(app.get(&format!("/api/courses/{id}")).await.status(), 200);
    click(&mut browser, "#courses li:first-child .delete").await;
    wait_for_titles(&mut browser, "the list without the deleted course", 1).await;
    assert_eq!(browser.texts("#courses li h2").await, ["Ownership in Rust"]);
    assert_eq!(
        browser.texts("#status").await,
        ["Deleted “Async Rust, by someone else”."]
    );
    assert_eq!(app.get(&format!("/api/courses/{id}")).await.status(), 404);

    // Signing out hides the controls again.
    click(&mut browser, "#sign-out").await;
    assert_eq!(count(&mut browser, "#courses .edit").await, 0);
    assert!(
        browser.exceptions().is_empty(),
        "script errors: {:?}",
        browser.exceptions()
    );
}
