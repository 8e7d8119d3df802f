//! The live view of `nodetrace top`: ratatui on crossterm.
//!
//! [`App`] is the view's state (the nodes' last refreshes, the sort, pause,
//! which node is shown) and [`draw`] renders it; both are plain, so tests
//! render into ratatui's `TestBackend`. [`run`] owns the terminal: it
//! refreshes every interval, redraws, and handles keys until `q`.

use std::time::{Duration, Instant};

use nodetrace_protocol::{TopFrame, TopRow, TopSort, TopSpec};
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};

use super::{COLUMNS, header_lines, refresh, row_cells};
use crate::{Connection, TracerError};

/// One node in the view.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// Its last refresh.
    pub frame: Option<TopFrame>,
    /// Why the last refresh failed, if it did.
    pub error: Option<String>,
}

/// What the view shows and how.
#[derive(Debug, Clone)]
pub struct App {
    /// The nodes, in the order given.
    pub nodes: Vec<NodeView>,
    /// The node shown.
    pub current: usize,
    /// The order of the rows.
    pub sort: TopSort,
    /// Refreshes are paused.
    pub paused: bool,
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing more than a redraw.
    Redraw,
    /// Leave.
    Quit,
}

impl App {
    /// A view of `names`, nothing refreshed yet.
    pub fn new(names: Vec<String>, sort: TopSort) -> App {
        App {
            nodes: names
                .into_iter()
                .map(|name| NodeView {
                    name,
                    frame: None,
                    error: None,
                })
                .collect(),
            current: 0,
            sort,
            paused: false,
        }
    }

    /// Handles a key: `b` `p` `m` `l` pick a sort, `s` cycles, space
    /// pauses, tab or `n` shows the next node, `q` or Esc quits.
    pub fn key(&mut self, code: KeyCode, modifiers: KeyModifiers) -> Action {
        let sort = match code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => {
                return Action::Quit;
            }
            KeyCode::Char(' ') => {
                self.paused = !self.paused;
                return Action::Redraw;
            }
            KeyCode::Tab | KeyCode::Char('n') => {
                self.current = (self.current + 1) % self.nodes.len().max(1);
                return Action::Redraw;
            }
            KeyCode::Char('b') => TopSort::Busy,
            KeyCode::Char('p') => TopSort::Polls,
            KeyCode::Char('m') => TopSort::Messages,
            KeyCode::Char('l') => TopSort::Mailbox,
            KeyCode::Char('s') => {
                let i = TopSort::ALL
                    .iter()
                    .position(|s| *s == self.sort)
                    .unwrap_or(0);
                TopSort::ALL[(i + 1) % TopSort::ALL.len()]
            }
            _ => return Action::Redraw,
        };
        self.sort = sort;
        // The node sorts from the next refresh; until then the rows it sent
        // are put in the new order here.
        for node in &mut self.nodes {
            if let Some(frame) = &mut node.frame {
                sort_rows(&mut frame.rows, sort);
            }
        }
        Action::Redraw
    }
}

/// Sorts rows as the node does, largest first.
pub fn sort_rows(rows: &mut [TopRow], sort: TopSort) {
    rows.sort_by(|a, b| b.order(a, sort));
}

/// Draws the view: the node's header, its busiest processes, the keys.
pub fn draw(f: &mut Frame, app: &App) {
    let [header, table, footer] = Layout::vertical([
        Constraint::Length(5),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let Some(node) = app.nodes.get(app.current) else {
        return;
    };
    let title = if app.nodes.len() > 1 {
        format!(
            " nodetrace top: {} ({}/{}) ",
            node.name,
            app.current + 1,
            app.nodes.len()
        )
    } else {
        format!(" nodetrace top: {} ", node.name)
    };
    let lines: Vec<Line> = match (&node.frame, &node.error) {
        (_, Some(error)) => vec![Line::from(error.as_str())],
        (Some(frame), None) => header_lines(&node.name, frame)
            .into_iter()
            .map(Line::from)
            .collect(),
        (None, None) => vec![Line::from("waiting for the first refresh")],
    };
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        header,
    );

    let interval = node.frame.as_ref().map_or(0, |fr| fr.interval_ms);
    let rows: Vec<Row> = node
        .frame
        .iter()
        .flat_map(|fr| &fr.rows)
        .map(|r| Row::new(row_cells(r, interval)))
        .collect();
    let widths = [
        Constraint::Length(12),
        Constraint::Fill(1),
        Constraint::Length(11),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(7),
    ];
    let header_row = Row::new(COLUMNS).style(Style::new().add_modifier(Modifier::REVERSED));
    f.render_widget(Table::new(rows, widths).header(header_row), table);

    let state = if app.paused { "  PAUSED" } else { "" };
    f.render_widget(
        Paragraph::new(format!(
            "sorted by {}{state}  [b]usy [p]olls [m]essages mailbox [l]en [s]ort  space pause  tab node  [q]uit",
            app.sort.as_str()
        )),
        footer,
    );
}

/// Runs the live view on the terminal until the user quits.
pub fn run(
    mut conns: Vec<Connection>,
    sort: TopSort,
    limit: u32,
    interval: Duration,
) -> Result<(), TracerError> {
    let mut app = App::new(conns.iter().map(|c| c.name().to_owned()).collect(), sort);
    // The first refresh starts each node's interval; the view shows the
    // figures of the next.
    let spec = TopSpec { sort, limit };
    for conn in &mut conns {
        refresh(conn, spec)?;
    }
    let mut terminal = ratatui::try_init().map_err(TracerError::Output)?;
    let result = (|| -> Result<(), TracerError> {
        let mut next = Instant::now() + interval;
        loop {
            if !app.paused && Instant::now() >= next {
                let spec = TopSpec {
                    sort: app.sort,
                    limit,
                };
                for (conn, node) in conns.iter_mut().zip(&mut app.nodes) {
                    match refresh(conn, spec) {
                        Ok(frame) => {
                            node.frame = Some(frame);
                            node.error = None;
                        }
                        Err(e) => node.error = Some(e.to_string()),
                    }
                }
                next = Instant::now() + interval;
            }
            terminal
                .draw(|f| draw(f, &app))
                .map_err(TracerError::Output)?;
            let wait = next.saturating_duration_since(Instant::now());
            if event::poll(wait).map_err(TracerError::Output)?
                && let Event::Key(key) = event::read().map_err(TracerError::Output)?
                && key.kind == KeyEventKind::Press
                && app.key(key.code, key.modifiers) == Action::Quit
            {
                return Ok(());
            }
        }
    })();
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn screen(app: &App, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, app)).unwrap();
        let buffer = terminal.backend().buffer();
        let mut text = String::new();
        for y in 0..height {
            let line: String = (0..width).map(|x| buffer[(x, y)].symbol()).collect();
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }

    fn app() -> App {
        let mut app = App::new(vec!["shop@localhost".into()], TopSort::Busy);
        app.nodes[0].frame = Some(super::super::tests::frame());
        app
    }

    #[test]
    fn the_view_renders_at_a_fixed_size() {
        insta_like(
            &screen(&app(), 100, 10),
            "\
┌ nodetrace top: shop@localhost ───────────────────────────────────────────────────────────────────┐
│shop@localhost  up 12m 34s  cpu 23.5%  mem 12.3MiB resident, 1.2GiB virtual  threads 9  files 14  │
│tokio 2 workers, 14 tasks alive, 0 in the global queue  processes 17                              │
│agent: 0 sessions, 0 events/s, 0 ring drops  interval 1.00s                                       │
└──────────────────────────────────────────────────────────────────────────────────────────────────┘
PID          NAME                        KIND        STATE   POLLS    BUSY    BUSY%  IN      MAILBOX
<0.40.1>     audit                       task        idle    120      612ms   61.2   118     37
<0.12.1>     conn:127.0.0.1:50412        task        running 240      4ms     0.4    0       0

sorted by busy  [b]usy [p]olls [m]essages mailbox [l]en [s]ort  space pause  tab node  [q]uit
",
        );
    }

    #[test]
    fn keys_sort_pause_and_quit() {
        let mut app = app();
        assert_eq!(
            app.key(KeyCode::Char('p'), KeyModifiers::NONE),
            Action::Redraw
        );
        assert_eq!(app.sort, TopSort::Polls);
        let rows = &app.nodes[0].frame.as_ref().unwrap().rows;
        assert_eq!(rows[0].name.as_deref(), Some("conn:127.0.0.1:50412"));
        app.key(KeyCode::Char('l'), KeyModifiers::NONE);
        assert_eq!(app.nodes[0].frame.as_ref().unwrap().rows[0].mailbox_len, 37);
        app.key(KeyCode::Char('s'), KeyModifiers::NONE);
        assert_eq!(app.sort, TopSort::Busy);
        app.key(KeyCode::Char(' '), KeyModifiers::NONE);
        assert!(app.paused);
        assert!(screen(&app, 100, 10).contains("sorted by busy  PAUSED"));
        assert_eq!(
            app.key(KeyCode::Char('q'), KeyModifiers::NONE),
            Action::Quit
        );
        assert_eq!(
            app.key(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Action::Quit
        );
    }

    /// Compares a screen with the one expected, showing both when they
    /// differ.
    fn insta_like(got: &str, want: &str) {
        assert!(got == want, "the screen differs:\n{got}\nwanted:\n{want}");
    }
}
