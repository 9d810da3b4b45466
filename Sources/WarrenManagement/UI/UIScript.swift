enum UIScript {
  static let javascript = ""
}
