//! The people lookup as HTML: server-rendered pages with a small inline stylesheet and script,
//! no front-end build. Pure: values in, markup out. Every text that comes from a directory goes
//! through [`escape`] (in element content and in attribute values alike); ids in URLs also
//! through [`path_segment`]. The script builds its list items with `textContent`, never markup.

use crate::store::groups::GroupRef;
use crate::store::people::{Contact, Person, PersonLink, Profile};

/// Text made safe for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// Text percent-encoded for one URL path segment (RFC 3986 unreserved characters stay).
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Text encoded for a query string value.
pub fn query_value(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// What every page of a directory shows around its content.
#[derive(Debug, Clone, Copy)]
pub struct Chrome<'a> {
    pub slug: &'a str,
    pub directory_name: &'a str,
    pub user_name: &'a str,
    pub csrf_token: &'a str,
    /// The Content-Security-Policy nonce of this response's inline style and script.
    pub nonce: &'a str,
}

/// One page of search results.
#[derive(Debug, Clone)]
pub struct Results<'a> {
    pub people: &'a [Person],
    /// The cursor of the next page, if there is one.
    pub next: Option<&'a str>,
}

const STYLE: &str = r#"
:root{--fg:#1b1f24;--muted:#57606a;--bg:#f6f8fa;--card:#fff;--line:#d0d7de;--accent:#0a58ca;--warn-bg:#fff1e5;--warn:#953800}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9da7b3;--bg:#0d1117;--card:#161b22;--line:#30363d;--accent:#6cb6ff;--warn-bg:#3d2410;--warn:#ffa657}}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--accent)}
a:focus-visible,button:focus-visible,input:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:var(--card);padding:.5rem;z-index:1}
header.top{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;justify-content:space-between;padding:.75rem 1rem;background:var(--card);border-bottom:1px solid var(--line)}
.brand{font-weight:600;text-decoration:none;color:var(--fg)}
.account{display:flex;gap:.75rem;align-items:center;color:var(--muted);font-size:.9rem}
.account form{margin:0}
main{max-width:48rem;margin:0 auto;padding:1rem}
h1{font-size:1.5rem;margin:.5rem 0 1rem}
h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
label{display:block;font-weight:600;margin-bottom:.25rem}
.row{display:flex;gap:.5rem}
input[type=search]{flex:1;min-width:0;font:inherit;padding:.6rem .75rem;border:1px solid var(--line);border-radius:6px;background:var(--card);color:var(--fg)}
button{font:inherit;padding:.5rem .9rem;border:1px solid var(--line);border-radius:6px;background:var(--card);color:var(--fg);cursor:pointer}
#status{color:var(--muted);min-height:1.5em}
ul.people{list-style:none;padding:0;margin:0}
ul.people li{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.6rem .8rem;margin-bottom:.5rem;display:flex;flex-direction:column}
ul.people .name{font-weight:600}
.meta,.contact,.kind{color:var(--muted);font-size:.9rem}
.badge{display:inline-block;margin-left:.5rem;padding:0 .45rem;border-radius:999px;font-size:.75rem;font-weight:600;vertical-align:middle;background:var(--warn-bg);color:var(--warn);border:1px solid var(--warn)}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:1rem 1.25rem}
.subtitle{color:var(--muted);margin-top:-.5rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.4rem 1rem;margin:1rem 0}
dl.facts dt{font-weight:600;color:var(--muted)}
dl.facts dd{margin:0;overflow-wrap:anywhere}
dl.facts ul,.plain{list-style:none;padding:0;margin:0}
address{font-style:normal;white-space:pre-line}
@media (max-width:32rem){dl.facts{grid-template-columns:1fr}dl.facts dd{margin-bottom:.5rem}}
"#;

/// The search-as-you-type: after a pause in typing, asks the JSON API and lists the answer.
/// Without it, the form submits and the server renders the same list.
const SCRIPT: &str = r#"
(function () {
  var form = document.getElementById('search');
  var input = document.getElementById('q');
  var list = document.getElementById('results');
  var status = document.getElementById('status');
  var more = document.getElementById('more');
  var page = form.getAttribute('action');
  var api = form.getAttribute('data-api');
  var hint = status.getAttribute('data-hint');
  var current = input.value.trim();
  var next = more.getAttribute('data-next');
  var serial = 0;
  var timer = null;
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text) e.textContent = text;
    return e;
  }
  function item(p) {
    var li = el('li', 'person');
    var a = el('a');
    a.href = page + 'people/' + encodeURIComponent(p.id);
    a.appendChild(el('span', 'name', p.displayName || p.userName));
    if (!p.active) a.appendChild(el('span', 'badge', 'Deactivated'));
    li.appendChild(a);
    var meta = [p.title, p.department].filter(Boolean).join(' \u00b7 ');
    if (meta) li.appendChild(el('span', 'meta', meta));
    var contact = [p.emails[0], p.phoneNumbers[0]].filter(Boolean).join(' \u00b7 ');
    if (contact) li.appendChild(el('span', 'contact', contact));
    return li;
  }
  function summary(count, hasMore, q) {
    if (count === 0) return 'No one matches \u201c' + q + '\u201d.';
    return count + (hasMore ? '+' : '') + (count === 1 && !hasMore ? ' person' : ' people') + ' found.';
  }
  function showMore(cursor) {
    next = cursor;
    more.hidden = !cursor;
    if (cursor) more.href = page + '?q=' + encodeURIComponent(current) + '&cursor=' + encodeURIComponent(cursor);
  }
  function load(q, cursor) {
    var mine = ++serial;
    var url = api + '?q=' + encodeURIComponent(q) + (cursor ? '&cursor=' + encodeURIComponent(cursor) : '');
    list.setAttribute('aria-busy', 'true');
    fetch(url, { headers: { Accept: 'application/json' }, credentials: 'same-origin' })
      .then(function (r) {
        if (r.status === 401) { window.location.assign(page + '?q=' + encodeURIComponent(q)); throw null; }
        if (!r.ok) throw new Error('HTTP ' + r.status);
        return r.json();
      })
      .then(function (answer) {
        if (mine !== serial) return;
        if (!cursor) list.textContent = '';
        answer.items.forEach(function (p) { list.appendChild(item(p)); });
        showMore(answer.next);
        status.textContent = summary(list.children.length, !!answer.next, q);
      })
      .catch(function (e) { if (e && mine === serial) status.textContent = 'The search failed; please try again.'; })
      .then(function () { if (mine === serial) list.removeAttribute('aria-busy'); });
  }
  function search() {
    var q = input.value.trim();
    if (q === current) return;
    current = q;
    history.replaceState(null, '', q ? page + '?q=' + encodeURIComponent(q) : page);
    if (!q) { ++serial; list.textContent = ''; showMore(null); status.textContent = hint; return; }
    load(q, null);
  }
  input.addEventListener('input', function () { clearTimeout(timer); timer = setTimeout(search, 200); });
  form.addEventListener('submit', function (e) { e.preventDefault(); clearTimeout(timer); current = null; search(); });
  more.addEventListener('click', function (e) { if (next) { e.preventDefault(); load(current, next); } });
  showMore(next);
})();
"#;

const HINT: &str = "Type a name, e-mail address, title, department or phone number.";

/// A whole page: header with the directory and the signed-in person, `main` as given (markup
/// already escaped), and the script when `with_script`.
fn layout(chrome: &Chrome, title: &str, main: &str, with_script: bool) -> String {
    let slug = escape(chrome.slug);
    let nonce = escape(chrome.nonce);
    let script =
        if with_script { format!("<script nonce=\"{nonce}\">{SCRIPT}</script>") } else { String::new() };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} \u{b7} {directory}</title><style nonce=\"{nonce}\">{STYLE}</style></head>\
         <body><a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header class=\"top\"><a class=\"brand\" href=\"/d/{slug}/\">{directory}</a>\
         <div class=\"account\"><span>Signed in as <strong id=\"signed-in-as\">{user}</strong></span>\
         <form method=\"post\" action=\"/saml/{slug}/logout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\">Sign out</button></form>\
         </div></header><main id=\"main\">{main}</main>{script}</body></html>\n",
        title = escape(title),
        directory = escape(chrome.directory_name),
        user = escape(chrome.user_name),
        csrf = escape(chrome.csrf_token),
    )
}

fn badge(active: bool) -> &'static str {
    if active {
        ""
    } else {
        "<span class=\"badge\">Deactivated</span>"
    }
}

fn person_href(slug: &str, id: &str) -> String {
    format!("/d/{}/people/{}", escape(slug), escape(&path_segment(id)))
}

/// The status line under the search box.
pub fn summary(count: usize, more: bool, query: &str) -> String {
    match (count, more) {
        (0, _) => format!("No one matches \u{201c}{query}\u{201d}."),
        (1, false) => "1 person found.".to_string(),
        (n, true) => format!("{n}+ people found."),
        (n, false) => format!("{n} people found."),
    }
}

fn result_item(slug: &str, person: &Person) -> String {
    let join = |items: [Option<&str>; 2]| -> String {
        items.into_iter().flatten().map(escape).collect::<Vec<_>>().join(" \u{b7} ")
    };
    let meta = join([person.title.as_deref(), person.department.as_deref()]);
    let contact =
        join([person.emails.first().map(String::as_str), person.phone_numbers.first().map(String::as_str)]);
    format!(
        "<li class=\"person\"><a href=\"{href}\"><span class=\"name\">{name}</span>{badge}</a>{meta}{contact}</li>",
        href = person_href(slug, &person.id),
        name = escape(person.name()),
        badge = badge(person.active),
        meta = if meta.is_empty() { String::new() } else { format!("<span class=\"meta\">{meta}</span>") },
        contact =
            if contact.is_empty() { String::new() } else { format!("<span class=\"contact\">{contact}</span>") },
    )
}

/// The search page, with `results` for `query` when there was one.
pub fn search_page(chrome: &Chrome, query: &str, results: Option<&Results>) -> String {
    let slug = escape(chrome.slug);
    let (items, status, next) = match results {
        Some(results) => (
            results.people.iter().map(|p| result_item(chrome.slug, p)).collect::<String>(),
            summary(results.people.len(), results.next.is_some(), query),
            results.next,
        ),
        None => (String::new(), HINT.to_string(), None),
    };
    let more_href = next
        .map(|cursor| format!("/d/{slug}/?q={}&cursor={}", query_value(query), query_value(cursor)))
        .unwrap_or_default();
    let main = format!(
        "<h1>Find people</h1>\
         <form id=\"search\" role=\"search\" method=\"get\" action=\"/d/{slug}/\" data-api=\"/d/{slug}/api/people\">\
         <label for=\"q\">Name, e-mail, title, department or phone</label>\
         <div class=\"row\"><input id=\"q\" name=\"q\" type=\"search\" value=\"{query}\" autocomplete=\"off\" \
         spellcheck=\"false\" autofocus aria-controls=\"results\" aria-describedby=\"status\">\
         <button type=\"submit\">Search</button></div></form>\
         <p id=\"status\" role=\"status\" data-hint=\"{hint}\">{status}</p>\
         <ul id=\"results\" class=\"people\" aria-live=\"polite\" aria-label=\"People found\">{items}</ul>\
         <p><a id=\"more\" href=\"{more_href}\" data-next=\"{next}\"{hidden}>More results</a></p>",
        query = escape(query),
        hint = escape(HINT),
        status = escape(&status),
        more_href = escape(&more_href),
        next = escape(next.unwrap_or_default()),
        hidden = if next.is_some() { "" } else { " hidden" },
    );
    layout(chrome, "Find people", &main, true)
}

fn contact_list(items: &[Contact], href: Option<&str>) -> String {
    let entries: String = items
        .iter()
        .map(|item| {
            let value = escape(&item.value);
            let shown = match href {
                // Phone numbers are dialled without their spaces.
                Some(scheme) => {
                    let target: String = item.value.chars().filter(|c| !c.is_whitespace()).collect();
                    format!("<a href=\"{scheme}{}\">{value}</a>", escape(&target))
                }
                None => value,
            };
            let kind = item
                .kind
                .as_deref()
                .map(|k| format!(" <span class=\"kind\">{}</span>", escape(k)))
                .unwrap_or_default();
            format!("<li>{shown}{kind}</li>")
        })
        .collect();
    format!("<ul>{entries}</ul>")
}

fn address_list(items: &[Contact]) -> String {
    let entries: String = items
        .iter()
        .map(|item| {
            let kind = item
                .kind
                .as_deref()
                .map(|k| format!("<span class=\"kind\">{}</span>", escape(k)))
                .unwrap_or_default();
            format!("<li><address>{}</address>{kind}</li>", escape(&item.value))
        })
        .collect();
    format!("<ul>{entries}</ul>")
}

fn person_link(slug: &str, link: &PersonLink) -> String {
    match &link.id {
        Some(id) => {
            format!("<a href=\"{}\">{}</a>{}", person_href(slug, id), escape(&link.name), badge(link.active))
        }
        None => escape(&link.name),
    }
}

fn group_items(groups: &[GroupRef]) -> String {
    groups.iter().map(|g| format!("<li>{}</li>", escape(&g.display_name))).collect()
}

/// A person's page.
pub fn person_page(chrome: &Chrome, profile: &Profile) -> String {
    let person = &profile.person;
    let slug = chrome.slug;
    let mut facts = vec![("User name", escape(&person.user_name))];
    if !profile.emails.is_empty() {
        facts.push(("E-mail", contact_list(&profile.emails, Some("mailto:"))));
    }
    if !profile.phone_numbers.is_empty() {
        facts.push(("Phone", contact_list(&profile.phone_numbers, Some("tel:"))));
    }
    if !profile.addresses.is_empty() {
        facts.push(("Address", address_list(&profile.addresses)));
    }
    if let Some(title) = &person.title {
        facts.push(("Title", escape(title)));
    }
    if let Some(department) = &person.department {
        facts.push(("Department", escape(department)));
    }
    let facts: String =
        facts.iter().map(|(term, value)| format!("<dt>{term}</dt><dd>{value}</dd>")).collect();
    let manager = match &profile.manager {
        Some(manager) => format!("<dt>Manager</dt><dd id=\"manager\">{}</dd>", person_link(slug, manager)),
        None => String::new(),
    };
    let reports = if profile.reports.is_empty() {
        "<p id=\"reports\">No direct reports.</p>".to_string()
    } else {
        let items: String =
            profile.reports.iter().map(|r| format!("<li>{}</li>", person_link(slug, r))).collect();
        format!("<ul id=\"reports\" class=\"plain\">{items}</ul>")
    };
    let groups = if profile.groups.is_empty() {
        "<p id=\"groups\">Not in any group.</p>".to_string()
    } else {
        format!("<ul id=\"groups\" class=\"plain\">{}</ul>", group_items(&profile.groups))
    };
    let subtitle = [person.title.as_deref(), person.department.as_deref()]
        .into_iter()
        .flatten()
        .map(escape)
        .collect::<Vec<_>>()
        .join(" \u{b7} ");
    let main = format!(
        "<p><a href=\"/d/{slug_html}/\">\u{2190} Back to search</a></p>\
         <article class=\"card\" aria-labelledby=\"person-name\">\
         <h1 id=\"person-name\">{name}{badge}</h1>{subtitle}\
         <dl class=\"facts\">{facts}{manager}</dl>\
         <section aria-labelledby=\"reports-heading\"><h2 id=\"reports-heading\">Direct reports</h2>{reports}</section>\
         <section aria-labelledby=\"groups-heading\"><h2 id=\"groups-heading\">Groups</h2>{groups}</section>\
         </article>",
        slug_html = escape(slug),
        name = escape(person.name()),
        badge = badge(person.active),
        subtitle = if subtitle.is_empty() { String::new() } else { format!("<p class=\"subtitle\">{subtitle}</p>") },
    );
    layout(chrome, person.name(), &main, false)
}

/// The page for a person who is not there (or not shown).
pub fn missing_page(chrome: &Chrome) -> String {
    let main = format!(
        "<h1>No such person</h1><p>This directory has no one at this address. \
         <a href=\"/d/{}/\">Search for people</a></p>",
        escape(chrome.slug)
    );
    layout(chrome, "No such person", &main, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_replaces_each_markup_character() {
        let cases = [
            ("", ""),
            ("plain text", "plain text"),
            ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
            ("a & b", "a &amp; b"),
            ("\"quoted\"", "&quot;quoted&quot;"),
            ("it's", "it&#39;s"),
            ("&amp;", "&amp;amp;"),
            ("Zoë Ångström 李", "Zoë Ångström 李"),
        ];
        for (input, expected) in cases {
            assert_eq!(escape(input), expected, "{input}");
        }
    }

    #[test]
    fn path_segment_keeps_only_unreserved_characters() {
        assert_eq!(
            path_segment("2819c223-7f76-453a-919d-413861904646"),
            "2819c223-7f76-453a-919d-413861904646"
        );
        assert_eq!(path_segment("a/b c?d#é"), "a%2Fb%20c%3Fd%23%C3%A9");
    }

    fn chrome() -> Chrome<'static> {
        Chrome {
            slug: "acme",
            directory_name: "Acme <Corp>",
            user_name: "eve\"@example.com",
            csrf_token: "abc",
            nonce: "n0nce",
        }
    }

    fn hostile() -> Person {
        Person {
            id: "id\"><script>".into(),
            user_name: "<script>alert(1)</script>".into(),
            display_name: None,
            title: Some("<b>boss</b>".into()),
            department: Some("R&D".into()),
            emails: vec!["x\"@y".into()],
            phone_numbers: vec!["<1>".into()],
            active: false,
        }
    }

    #[test]
    fn pages_never_render_directory_text_as_markup() {
        let people = [hostile()];
        let search =
            search_page(&chrome(), "<img src=x>", Some(&Results { people: &people, next: Some("<c>") }));
        let profile = Profile {
            person: hostile(),
            emails: vec![Contact { value: "a\"b@example.com".into(), kind: Some("<work>".into()) }],
            phone_numbers: vec![],
            addresses: vec![Contact { value: "<street>".into(), kind: None }],
            manager: Some(PersonLink { id: Some("m\"".into()), name: "<m>".into(), active: true }),
            reports: vec![PersonLink { id: None, name: "<r>".into(), active: true }],
            groups: vec![GroupRef { group_id: "g".into(), display_name: "<g>".into() }],
        };
        let person = person_page(&chrome(), &profile);
        for page in [&search, &person] {
            assert!(!page.contains("<script>alert"), "{page}");
            assert!(!page.contains("<b>boss"), "{page}");
            assert!(!page.contains("<img"), "{page}");
            assert!(!page.contains("\"><script>"), "{page}");
            assert!(!page.contains("Acme <Corp>"), "{page}");
            assert!(page.contains("Deactivated"), "{page}");
        }
        assert!(search.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            person.contains("&lt;m&gt;") && person.contains("&lt;g&gt;") && person.contains("&lt;street&gt;")
        );
        assert!(person.contains("/d/acme/people/m%22"), "{person}");
    }

    #[test]
    fn summary_counts_people() {
        assert_eq!(summary(0, false, "zed"), "No one matches \u{201c}zed\u{201d}.");
        assert_eq!(summary(1, false, "a"), "1 person found.");
        assert_eq!(summary(2, false, "a"), "2 people found.");
        assert_eq!(summary(20, true, "a"), "20+ people found.");
    }
}
