//! The people lookup pages over real HTTP on both backends: sign-in redirects, a person's page
//! (contact data, manager, direct reports, groups), HTML escaping, deactivated people and the
//! directory's `show_deactivated`, and isolation between directories. `browser.rs` drives the
//! same pages in a headless Chromium.

mod browser;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::saml::{setup, sign_in, Browser};
use crate::support::{on_both_backends, user_body, TestServer};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// The people of the lookup tests, by id.
pub(crate) struct Staff {
    pub grace: String,
    pub alice: String,
    pub dave: String,
    pub script: String,
    pub outsider: String,
}

fn person(
    user_name: &str,
    display_name: &str,
    title: &str,
    department: &str,
    manager: Option<Value>,
) -> Value {
    let mut body = user_body(user_name);
    body["schemas"] = json!(["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE]);
    body["displayName"] = json!(display_name);
    body["title"] = json!(title);
    body["phoneNumbers"] = json!([{"value": format!("+1 555 01{:02}", user_name.len()), "type": "work"}]);
    body[ENTERPRISE] = json!({"department": department});
    if let Some(manager) = manager {
        body[ENTERPRISE]["manager"] = manager;
    }
    body
}

/// Grace manages alice, dave (deactivated) and a person named `<script>`; an outsider's manager
/// is no one in the directory; grace and alice are in the group Engineers. Alice
/// (`alice@example.com`, made by `saml::setup`) gets her manager by a replace.
pub(crate) async fn staff(server: &TestServer) -> Staff {
    let mut grace = person("grace@example.com", "Grace Hopper", "Rear Admiral", "Navy", None);
    grace["addresses"] = json!([{"streetAddress": "1 Navy Yard", "locality": "Arlington", "postalCode": "22202",
        "country": "US", "type": "work"}]);
    let grace = server.create_user(grace).await["id"].as_str().unwrap().to_string();
    let manager = Some(json!({"value": grace, "displayName": "Grace Hopper"}));
    let alice = server.get("/scim/v2/Users?filter=userName%20eq%20%22alice@example.com%22").await.body
        ["Resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let replaced = server
        .put(
            &format!("/scim/v2/Users/{alice}"),
            &person("alice@example.com", "Alice Liddell", "Engineer", "Research", manager.clone()),
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    let mut dave = person("dave@example.com", "Dave Gone", "Engineer", "Research", manager.clone());
    dave["active"] = json!(false);
    let dave = server.create_user(dave).await["id"].as_str().unwrap().to_string();
    let script = person("xss@example.com", "<script>alert(1)</script>", "<b>Chief</b>", "R&D", manager);
    let script = server.create_user(script).await["id"].as_str().unwrap().to_string();
    let outside = Some(json!({"value": "no-such-id", "displayName": "Olga Outside"}));
    let outsider = person("oscar@example.com", "Oscar Out", "Contractor", "Sales", outside);
    let outsider = server.create_user(outsider).await["id"].as_str().unwrap().to_string();
    let group = server
        .post(
            "/scim/v2/Groups",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Engineers",
                "members": [{"value": grace}, {"value": alice}]}),
        )
        .await;
    assert_eq!(group.status, StatusCode::CREATED, "{}", group.body);
    Staff { grace, alice, dave, script, outsider }
}

/// A signed-in browser on a directory with the staff.
async fn signed_in(server: &TestServer) -> (Browser, Staff) {
    let idp = setup(server, false).await;
    let staff = staff(server).await;
    let mut browser = Browser::new();
    let answer = sign_in(server, &idp, &mut browser, "alice@example.com").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    (browser, staff)
}

async fn pages_without_a_session_send_the_browser_to_sign_in(server: TestServer) {
    setup(&server, false).await;
    let mut browser = Browser::new();
    for (path, back) in [
        ("/d/acme/", "%2Fd%2Facme%2F"),
        ("/d/acme/?q=gr", "%2Fd%2Facme%2F%3Fq%3Dgr"),
        ("/d/acme/people/abc", "%2Fd%2Facme%2Fpeople%2Fabc"),
    ] {
        let answer = browser.get(&server.url(path)).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(answer.location.as_deref(), Some(format!("/saml/acme/login?return_to={back}").as_str()));
        assert!(!answer.body.contains("Grace"));
    }
}

async fn a_person_page_shows_contacts_manager_reports_and_groups(server: TestServer) {
    let (mut browser, staff) = signed_in(&server).await;
    let page = browser.get(&server.url(&format!("/d/acme/people/{}", staff.grace))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let html = page.body;
    assert!(html.contains("<h1 id=\"person-name\">Grace Hopper</h1>"), "{html}");
    assert!(html.contains("mailto:grace@example.com"), "{html}");
    assert!(html.contains("<a href=\"tel:+15550117\">+1 555 0117</a>"), "{html}");
    assert!(html.contains("1 Navy Yard") && html.contains("22202 Arlington"), "{html}");
    assert!(html.contains("Rear Admiral") && html.contains("Navy"));
    // Direct reports, linked, the deactivated one marked.
    let reports = &html[html.find("id=\"reports\"").unwrap()..];
    let reports = &reports[..reports.find("</ul>").unwrap()];
    for id in [&staff.alice, &staff.dave, &staff.script] {
        assert!(reports.contains(&format!("href=\"/d/acme/people/{id}\"")), "{reports}");
    }
    assert!(!reports.contains(&staff.outsider));
    assert!(reports.contains("Dave Gone</a><span class=\"badge\">Deactivated</span>"), "{reports}");
    assert!(html.contains("<ul id=\"groups\" class=\"plain\"><li>Engineers</li></ul>"), "{html}");

    // Alice's manager is a link to grace; the outsider's is only a name.
    let alice = browser.get(&server.url(&format!("/d/acme/people/{}", staff.alice))).await.body;
    assert!(
        alice.contains(&format!(
            "<dd id=\"manager\"><a href=\"/d/acme/people/{}\">Grace Hopper</a></dd>",
            staff.grace
        )),
        "{alice}"
    );
    assert!(alice.contains("No direct reports."));
    let outsider = browser.get(&server.url(&format!("/d/acme/people/{}", staff.outsider))).await.body;
    assert!(outsider.contains("<dd id=\"manager\">Olga Outside</dd>"), "{outsider}");
    assert!(outsider.contains("Not in any group."));

    let missing = browser.get(&server.url("/d/acme/people/no-such-person")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("No such person"));
}

async fn the_search_page_lists_results_without_javascript(server: TestServer) {
    let (mut browser, staff) = signed_in(&server).await;
    let page = browser.get(&server.url("/d/acme/?q=navy")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("1 person found."), "{}", page.body);
    assert!(page.body.contains(&format!("href=\"/d/acme/people/{}\"", staff.grace)));
    assert!(page.body.contains("value=\"navy\""));
    let none = browser.get(&server.url("/d/acme/?q=zzz")).await;
    assert!(none.body.contains("No one matches \u{201c}zzz\u{201d}."), "{}", none.body);
    // Every page carries the sign-out form with its CSRF token, and a strict script policy.
    let home = browser.get(&server.url("/d/acme/")).await;
    assert!(home.body.contains(
        "<form method=\"post\" action=\"/saml/acme/logout\"><input type=\"hidden\" name=\"csrf\" value=\""
    ));
    let policy = browser.http.get(server.url("/d/acme/")).header("cookie", cookie_header(&browser));
    let policy = policy.send().await.unwrap();
    let csp = policy.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'nonce-") && csp.contains("default-src 'none'"), "{csp}");
}

fn cookie_header(browser: &Browser) -> String {
    browser.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
}

async fn text_from_the_directory_is_escaped(server: TestServer) {
    let (mut browser, staff) = signed_in(&server).await;
    let search = browser.get(&server.url("/d/acme/?q=xss%20%3Cimg")).await.body;
    assert!(!search.contains("<img"), "{search}");
    let search = browser.get(&server.url("/d/acme/?q=xss")).await.body;
    assert!(search.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{search}");
    assert!(search.contains("&lt;b&gt;Chief&lt;/b&gt; \u{b7} R&amp;D"), "{search}");
    let person = browser.get(&server.url(&format!("/d/acme/people/{}", staff.script))).await.body;
    let grace = browser.get(&server.url(&format!("/d/acme/people/{}", staff.grace))).await.body;
    for html in [&search, &person, &grace] {
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<b>Chief"), "{html}");
    }
    assert!(person.contains("<h1 id=\"person-name\">&lt;script&gt;alert(1)&lt;/script&gt;"), "{person}");
}

async fn deactivated_people_are_marked_unless_the_directory_hides_them(server: TestServer) {
    let (mut browser, staff) = signed_in(&server).await;
    let lookup = server.admin(Method::GET, "/admin/v1/directories/acme/lookup", None).await;
    assert_eq!(lookup.body, json!({"show_deactivated": true, "url": "/d/acme/"}));
    let page = browser.get(&server.url("/d/acme/?q=dave")).await.body;
    assert!(page.contains("Dave Gone</span><span class=\"badge\">Deactivated</span>"), "{page}");
    let api: Value =
        serde_json::from_str(&browser.get(&server.url("/d/acme/api/people?q=dave")).await.body).unwrap();
    assert_eq!(api["items"][0]["active"], false);
    let dave = browser.get(&server.url(&format!("/d/acme/people/{}", staff.dave))).await;
    assert_eq!(dave.status, StatusCode::OK);
    assert!(dave.body.contains("Deactivated"));

    let refused = server
        .admin(Method::PUT, "/admin/v1/directories/acme/lookup", Some(json!({"show_deactivated": "no"})))
        .await;
    refused.assert_admin_error(400);
    let changed = server
        .admin(Method::PUT, "/admin/v1/directories/acme/lookup", Some(json!({"show_deactivated": false})))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["show_deactivated"], false);

    let page = browser.get(&server.url("/d/acme/?q=dave")).await.body;
    assert!(page.contains("No one matches") && !page.contains("Dave Gone"), "{page}");
    let api: Value =
        serde_json::from_str(&browser.get(&server.url("/d/acme/api/people?q=dave")).await.body).unwrap();
    assert_eq!(api["items"], json!([]));
    let api: Value =
        serde_json::from_str(&browser.get(&server.url("/d/acme/api/people?q=")).await.body).unwrap();
    assert!(api["items"].as_array().unwrap().iter().all(|p| p["active"] == true), "{api}");
    assert_eq!(
        browser.get(&server.url(&format!("/d/acme/people/{}", staff.dave))).await.status,
        StatusCode::NOT_FOUND
    );
    let grace = browser.get(&server.url(&format!("/d/acme/people/{}", staff.grace))).await.body;
    assert!(!grace.contains("Dave Gone") && grace.contains("Alice Liddell"), "{grace}");
    let audit = server.admin(Method::GET, "/admin/v1/audit?resource=directory", None).await;
    assert!(audit.body.to_string().contains("show_deactivated"), "{}", audit.body);
}

/// Every page of the JSON search for `q`, followed by its cursors: the ids found, in order.
async fn all_pages(server: &TestServer, browser: &mut Browser, q: &str) -> (Vec<String>, Vec<Value>) {
    let (mut ids, mut pages, mut cursor) = (Vec::new(), Vec::new(), None::<String>);
    loop {
        let mut url = server.url(&format!("/d/acme/api/people?q={q}"));
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = serde_json::from_str(&browser.get(&url).await.body).unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 20, "{page}");
        ids.extend(items.iter().map(|p| p["id"].as_str().unwrap().to_string()));
        cursor = page["next"].as_str().map(str::to_string);
        pages.push(page.clone());
        if cursor.is_none() {
            return (ids, pages);
        }
        assert_eq!(items.len(), 20, "only a full page has a next one: {page}");
        assert!(pages.len() < 10, "the cursors must end");
    }
}

async fn words_matching_different_attributes_find_people_and_page_in_id_order(server: TestServer) {
    let (mut browser, staff) = signed_in(&server).await;
    // Welders of the harbour, but every fifth one a clerk and every seventh in the office; the
    // first is deactivated and the second's title and department swap the words' attributes.
    let mut expected = Vec::new();
    for n in 0..34 {
        let (title, department) = match n {
            1 => ("Harbor Pilot", "Welding"),
            _ if n % 5 == 4 => ("Clerk", "Harbor"),
            _ if n % 7 == 6 => ("Welder", "Office"),
            _ => ("Welder", "Harbor"),
        };
        let mut body =
            person(&format!("dock{n}@example.com"), &format!("Dock Worker {n}"), title, department, None);
        body["active"] = json!(n != 0);
        let id = server.create_user(body).await["id"].as_str().unwrap().to_string();
        if n % 5 != 4 && n % 7 != 6 {
            expected.push(id);
        }
    }
    expected.sort();
    assert_eq!(expected.len(), 24);

    // Title and department, in either order, and with a userName prefix on top.
    for q in ["wel%20harb", "HARB%20wel", "wel%20harb%20dock"] {
        let (ids, pages) = all_pages(&server, &mut browser, q).await;
        assert_eq!(ids, expected, "{q}");
        assert_eq!(pages.len(), 2, "{q}");
        assert_eq!(pages[0]["items"][0]["active"], false, "{q}");
    }
    // A userName (and displayName) word and the start of a phone number; no one of staff matches.
    let (ids, _) = all_pages(&server, &mut browser, "dock%20%2B1").await;
    assert_eq!(ids.len(), 34);
    let (ids, _) = all_pages(&server, &mut browser, "wel%20navy").await;
    assert!(ids.is_empty(), "{ids:?}");
    let (ids, _) = all_pages(&server, &mut browser, "grace%20navy%20rear").await;
    assert_eq!(ids, std::slice::from_ref(&staff.grace));

    // Without the deactivated: the same people but the first, still in two pages.
    let hidden = server
        .admin(Method::PUT, "/admin/v1/directories/acme/lookup", Some(json!({"show_deactivated": false})))
        .await;
    assert_eq!(hidden.status, StatusCode::OK, "{}", hidden.body);
    let (ids, pages) = all_pages(&server, &mut browser, "harb%20wel").await;
    assert_eq!(ids, expected[1..], "{pages:?}");
    assert_eq!(pages.len(), 2);
}

async fn another_directorys_session_opens_no_lookup_page(server: TestServer) {
    let (mut browser, staff) = signed_in(&server).await;
    let (_, globex_key) = server.second_directory("globex");
    let stranger = server
        .send(
            server
                .http
                .post(server.url("/scim/v2/Users"))
                .bearer_auth(&globex_key)
                .header("content-type", "application/scim+json")
                .body(user_body("stranger@globex.example").to_string()),
        )
        .await;
    assert_eq!(stranger.status, StatusCode::CREATED);
    let stranger = stranger.body["id"].as_str().unwrap().to_string();
    // Signed in to acme: globex's pages ask for globex's sign-in, and show nothing of it.
    for path in ["/d/globex/".to_string(), format!("/d/globex/people/{stranger}"), "/d/globex/?q=str".into()]
    {
        let answer = browser.get(&server.url(&path)).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{path}");
        assert!(answer.location.unwrap().starts_with("/saml/globex/login?return_to="));
        assert!(!answer.body.contains("stranger"));
    }
    assert_eq!(browser.get(&server.url("/d/globex/api/people?q=str")).await.status, StatusCode::UNAUTHORIZED);
    // And acme's pages do not show globex's people.
    let foreign = browser.get(&server.url(&format!("/d/acme/people/{stranger}"))).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    assert!(!browser.get(&server.url("/d/acme/?q=stranger")).await.body.contains("stranger@globex"));
    assert_eq!(
        browser.get(&server.url(&format!("/d/acme/people/{}", staff.alice))).await.status,
        StatusCode::OK
    );
}

on_both_backends!(
    pages_without_a_session_send_the_browser_to_sign_in,
    a_person_page_shows_contacts_manager_reports_and_groups,
    the_search_page_lists_results_without_javascript,
    text_from_the_directory_is_escaped,
    deactivated_people_are_marked_unless_the_directory_hides_them,
    words_matching_different_attributes_find_people_and_page_in_id_order,
    another_directorys_session_opens_no_lookup_page,
);
