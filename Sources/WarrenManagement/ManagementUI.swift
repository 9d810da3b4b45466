import NIOCore

/// The web UI served at `/` on the management port: one HTML page, its script and its style sheet, compiled into
/// the binary (no CDN, no files beside it), talking to the same `/api` with the user's credentials.
public enum ManagementUI {
  /// The UI's files by path.
  public static let assets: [String: (contentType: String, bytes: ByteBuffer)] = [
    "/index.html": ("text/html; charset=utf-8", ByteBuffer(string: UIPage.html)),
    "/app.js": ("text/javascript; charset=utf-8", ByteBuffer(string: UIScript.javascript)),
    "/style.css": ("text/css; charset=utf-8", ByteBuffer(string: UIStyle.css)),
  ]
}
