//! Pagination: newest first, ordered by (`tm_create`, `id`) descending.
//!
//! `next_page_token` is the `tm_create` of the last item returned; when the item after it has
//! the same `tm_create`, the token carries the last id as a tie-breaker
//! (`2022-09-22 02:41:44.884828,<id>`), so a walk returns every item exactly once. A plain
//! timestamp (what seed-era clients send) means "strictly older than this".

use chrono::NaiveDateTime;

use crate::time;

pub const DEFAULT_PAGE_SIZE: u32 = 10;
pub const MAX_PAGE_SIZE: u32 = 100;

/// Where a page starts: strictly after this position in (tm_create, id) descending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub tm_create: NaiveDateTime,
    /// None: every item with `tm_create` strictly older. Some(id): also items with the same
    /// `tm_create` and a smaller id.
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Already clamped to 1..=MAX_PAGE_SIZE.
    pub size: u32,
    pub after: Option<Cursor>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("page_token: not a token returned as next_page_token")]
    BadToken,
}

impl Page {
    /// `size` 0 means the default; above the maximum it is capped (validation of negative or
    /// non-numeric sizes happens where the text is parsed).
    pub fn new(size: u32, token: &str) -> Result<Page, PageError> {
        let size = match size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = if token.is_empty() {
            None
        } else {
            Some(parse_token(token)?)
        };
        Ok(Page { size, after })
    }

    /// How many rows to fetch: one more than the page, to see whether the next item ties.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.size) + 1
    }

    /// Cuts the fetched rows (at most `fetch_limit`) to the page and makes its token.
    pub fn finish<T>(
        &self,
        mut rows: Vec<T>,
        key: impl Fn(&T) -> (NaiveDateTime, String),
    ) -> (Vec<T>, String) {
        let next = if rows.len() > self.size as usize {
            rows.pop().map(|r| key(&r))
        } else {
            None
        };
        let token = match rows.last().map(&key) {
            None => String::new(),
            Some((tm, id)) => match next {
                Some((next_tm, _)) if next_tm == tm => format!("{},{id}", time::format(tm)),
                _ => time::format(tm),
            },
        };
        (rows, token)
    }
}

fn parse_token(token: &str) -> Result<Cursor, PageError> {
    let (tm, id) = match token.split_once(',') {
        Some((tm, id)) => {
            let id = uuid::Uuid::parse_str(id).map_err(|_| PageError::BadToken)?;
            (tm, Some(id.hyphenated().to_string()))
        }
        None => (token, None),
    };
    let tm_create = time::parse(tm.trim()).ok_or(PageError::BadToken)?;
    // No resource was made outside the contract's years; a token naming one was not ours, and
    // PostgreSQL and SQLite would each read it their own way.
    if !(1..=9999).contains(&chrono::Datelike::year(&tm_create)) {
        return Err(PageError::BadToken);
    }
    Ok(Cursor { tm_create, id })
}

/// Applies a page to a boxed diesel query over a table with `tm_create` and `id` columns:
/// the cursor filter, newest-first order and the fetch limit (one row more than the page).
///
/// With a fifth argument, the tie-breaker column is a key derived from the id (a function of
/// the cursor's id text returning `Option<key>`, in the same order as the ids); a tie-breaker
/// it cannot read means "strictly older than the timestamp".
#[macro_export]
macro_rules! paginate {
    ($query:expr, $tm_create:expr, $id:expr, $page:expr) => {
        $crate::paginate!($query, $tm_create, $id, $page, |id: &str| Some(
            id.to_owned()
        ))
    };
    ($query:expr, $tm_create:expr, $id:expr, $page:expr, $to_key:expr) => {{
        let page: &$crate::page::Page = $page;
        let mut query = $query;
        if let Some(cursor) = &page.after {
            let key = cursor.id.as_deref().and_then($to_key);
            query = match key {
                None => query.filter($tm_create.lt(cursor.tm_create)),
                // The redundant `<=` lets the index seek to the cursor; the OR alone is only
                // a filter, stepping over every newer row (O(depth) per page).
                Some(key) => query.filter($tm_create.le(cursor.tm_create)).filter(
                    $tm_create
                        .lt(cursor.tm_create)
                        .or($tm_create.eq(cursor.tm_create).and($id.lt(key))),
                ),
            };
        }
        query
            .order(($tm_create.desc(), $id.desc()))
            .limit(page.fetch_limit())
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tm(s: &str) -> NaiveDateTime {
        time::parse(s).unwrap()
    }

    #[test]
    fn size_defaults_and_caps() {
        assert_eq!(Page::new(0, "").unwrap().size, 10);
        assert_eq!(Page::new(5, "").unwrap().size, 5);
        assert_eq!(Page::new(1000, "").unwrap().size, 100);
        assert_eq!(Page::new(5, "").unwrap().fetch_limit(), 6);
    }

    #[test]
    fn tokens_parse_with_and_without_tie_breaker() {
        let p = Page::new(10, "2022-09-22 02:41:44.884828").unwrap();
        assert_eq!(
            p.after,
            Some(Cursor {
                tm_create: tm("2022-09-22 02:41:44.884828"),
                id: None
            })
        );
        let id = "e8b2e976-f043-44c8-bb89-e214e225e813";
        let p = Page::new(10, &format!("2022-09-22 02:41:44.884828,{id}")).unwrap();
        assert_eq!(p.after.unwrap().id.as_deref(), Some(id));
        assert_eq!(Page::new(10, "junk"), Err(PageError::BadToken));
        for outside in [
            "0000-12-31 23:59:59.000000",
            "-0001-01-01 00:00:00",
            "10000-01-01 00:00:00",
            "+10000-01-01 00:00:00",
            "262143-01-01 00:00:00",
        ] {
            assert_eq!(
                Page::new(10, outside),
                Err(PageError::BadToken),
                "{outside}"
            );
        }
        assert!(Page::new(10, "0001-01-01 00:00:00").is_ok());
        assert!(Page::new(10, "9999-12-31 23:59:59.999999").is_ok());
        assert_eq!(
            Page::new(10, "2022-09-22 02:41:44.884828,notauuid"),
            Err(PageError::BadToken)
        );
    }

    #[test]
    fn token_is_plain_unless_the_next_item_ties() {
        let page = Page::new(2, "").unwrap();
        let key = |r: &(NaiveDateTime, String)| r.clone();
        let a = (tm("2022-01-01 00:00:03"), "c".to_string());
        let b = (tm("2022-01-01 00:00:02"), "b".to_string());
        let c = (tm("2022-01-01 00:00:01"), "a".to_string());
        let (rows, token) = page.finish(vec![a.clone(), b.clone(), c.clone()], key);
        assert_eq!(rows.len(), 2);
        assert_eq!(token, "2022-01-01 00:00:02.000000");

        let tie = (tm("2022-01-01 00:00:02"), "a".to_string());
        let (_, token) = page.finish(vec![a.clone(), b.clone(), tie], key);
        assert_eq!(token, "2022-01-01 00:00:02.000000,b");

        let (rows, token) = page.finish(vec![a], key);
        assert_eq!(rows.len(), 1);
        assert_eq!(token, "2022-01-01 00:00:03.000000");
        let (rows, token) = page.finish(Vec::<(NaiveDateTime, String)>::new(), key);
        assert!(rows.is_empty());
        assert_eq!(token, "");
    }
}
