/// The web UI's style sheet.
enum UIStyle {
  static let css = #"""
    :root { --fg: #1d2430; --muted: #5d6878; --line: #d9dee6; --accent: #2d6cdf; --bad: #c2362b; --good: #23804a;
      --bg: #f6f7f9; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 14px; color: var(--fg); }
    body { margin: 0; background: var(--bg); }
    header { display: flex; align-items: center; gap: 1.5em; padding: .6em 1.2em; background: #17202e; color: #fff; }
    header .brand { font-weight: 700; font-size: 1.2em; letter-spacing: .03em; }
    header nav a { color: #c9d3e3; text-decoration: none; margin-right: 1em; }
    header nav a.active, header nav a:hover { color: #fff; border-bottom: 2px solid var(--accent); }
    header #who { margin-left: auto; color: #c9d3e3; }
    main { padding: 1em 1.5em; max-width: 1400px; }
    h1 { font-size: 1.4em; margin: .4em 0 .8em; } h2 { font-size: 1.1em; margin: 1.4em 0 .5em; }
    table { border-collapse: collapse; width: 100%; background: #fff; margin-bottom: 1em; }
    th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid var(--line); vertical-align: top; }
    th { background: #eef1f5; font-weight: 600; white-space: nowrap; }
    th.sortable { cursor: pointer; } th.sorted::after { content: " \25B2"; } th.sorted.reverse::after { content: " \25BC"; }
    td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
    form.inline, .toolbar { display: flex; flex-wrap: wrap; gap: .6em; align-items: end; margin: .5em 0 1em; }
    form.box { background: #fff; border: 1px solid var(--line); padding: .8em 1em; margin: .5em 0 1.2em; }
    form.box label, form#login label { display: block; margin: .4em 0; }
    label { color: var(--muted); } input, select, textarea { font: inherit; padding: .3em .4em; border: 1px solid var(--line); border-radius: 3px; }
    textarea { width: 100%; min-height: 6em; font-family: ui-monospace, monospace; }
    button { font: inherit; padding: .35em .9em; border: 1px solid var(--accent); background: var(--accent); color: #fff; border-radius: 3px; cursor: pointer; }
    button.danger { background: var(--bad); border-color: var(--bad); } button.plain { background: #fff; color: var(--accent); }
    form#login { max-width: 320px; margin: 4em auto; background: #fff; padding: 1.5em 2em; border: 1px solid var(--line); }
    .error { color: var(--bad); } .message { padding: .6em 1em; margin-bottom: 1em; border-radius: 3px; background: #e6f1ea; color: var(--good); }
    .message.bad { background: #f8e4e2; color: var(--bad); }
    .cards { display: flex; flex-wrap: wrap; gap: 1em; margin-bottom: 1em; }
    .card { background: #fff; border: 1px solid var(--line); padding: .6em 1em; min-width: 9em; }
    .card .value { font-size: 1.5em; font-weight: 600; } .card .label { color: var(--muted); }
    .alarm { color: var(--bad); font-weight: 600; } .ok { color: var(--good); }
    .chart { background: #fff; border: 1px solid var(--line); padding: .5em; margin-bottom: 1em; }
    .chart svg { width: 100%; height: 160px; } .legend span { margin-right: 1em; } .legend i { display: inline-block; width: .8em; height: .8em; margin-right: .3em; }
    .pager { display: flex; gap: .6em; align-items: center; margin: .5em 0; }
    pre { background: #fff; border: 1px solid var(--line); padding: .6em; overflow: auto; max-height: 20em; }
    .tabs a { margin-right: 1em; }
    """#
}
