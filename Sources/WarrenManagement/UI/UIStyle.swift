enum UIStyle {
  static let css = ""
}
