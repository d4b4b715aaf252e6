//! The dashboard's web side: the page and its script and style, embedded in
//! the binary, and the surveys pushed to every open page as server-sent events.
//!
//! - `GET /`: the page (`assets/index.html`), `GET /app.js`, `GET /app.css`;
//! - `GET /events`: `text/event-stream`, one `data:` line of JSON (a
//!   [`Snapshot`](super::view::Snapshot)) per survey, the latest first;
//! - `GET /snapshot.json`: the latest survey, for scripts and `curl`.
//!
//! Nothing is fetched from elsewhere at run time: the page works offline.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream};
use tokio::sync::watch;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// The latest survey, as the JSON pushed to pages.
pub type Latest = watch::Receiver<Arc<String>>;

/// The routes, serving the surveys `latest` receives.
pub fn router(latest: Latest) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { page(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { page(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/app.css",
            get(|| async { page(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/events", get(events))
        .route("/snapshot.json", get(snapshot))
        .with_state(latest)
}

fn page(body: &'static str, kind: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, kind)], body)
}

async fn snapshot(State(latest): State<Latest>) -> impl IntoResponse {
    let json = latest.borrow().clone();
    (
        [(header::CONTENT_TYPE, "application/json")],
        json.as_str().to_owned(),
    )
}

/// The latest survey at once, then each new one; a page that falls behind
/// gets the newest (a watch keeps one value), never a backlog.
async fn events(
    State(latest): State<Latest>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let pushed = stream::unfold((latest, true), |(mut latest, first)| async move {
        if !first {
            latest.changed().await.ok()?;
        }
        let json = latest.borrow_and_update().clone();
        let event = Event::default().data(json.as_str());
        Some((Ok(event), (latest, false)))
    });
    Sse::new(pushed).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_fetches_nothing_from_elsewhere() {
        for (name, text) in [
            ("index.html", INDEX),
            ("app.js", SCRIPT),
            ("app.css", STYLE),
        ] {
            for scheme in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(scheme), "{name} names {scheme}");
            }
        }
        assert!(INDEX.contains(r#"src="app.js""#) && INDEX.contains(r#"href="app.css""#));
        assert!(SCRIPT.contains(r#"new EventSource("events")"#));
    }
}
