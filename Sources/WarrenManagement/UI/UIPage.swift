/// The web UI's one HTML page: a login form and the application shell (`app.js` fills it).
enum UIPage {
  static let html = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Warren management</title>
    <link rel="stylesheet" href="/style.css">
    <link rel="icon" href="data:,">
    </head>
    <body>
    <header>
      <span class="brand">Warren</span>
      <nav id="nav" hidden>
        <a href="#/" data-nav="overview">Overview</a>
        <a href="#/connections" data-nav="connections">Connections</a>
        <a href="#/channels" data-nav="channels">Channels</a>
        <a href="#/exchanges" data-nav="exchanges">Exchanges</a>
        <a href="#/queues" data-nav="queues">Queues</a>
        <a href="#/admin" data-nav="admin">Admin</a>
      </nav>
      <span id="who"></span>
      <button id="logout" hidden>Log out</button>
    </header>
    <main>
      <form id="login" hidden>
        <h1>Log in</h1>
        <label>Username <input id="login-user" name="username" autocomplete="username" required></label>
        <label>Password <input id="login-password" name="password" type="password" autocomplete="current-password" required></label>
        <button id="login-submit" type="submit">Log in</button>
        <p id="login-error" class="error"></p>
      </form>
      <div id="message" class="message" hidden></div>
      <div id="view"></div>
    </main>
    <script src="/app.js"></script>
    </body>
    </html>
    """#
}
