enum UIPage {
  static let html = ""
}
