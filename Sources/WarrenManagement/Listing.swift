import Foundation

/// RabbitMQ's listing parameters: `page`, `page_size`, `name` (with `use_regex`), `sort` (a dotted field),
/// `sort_reverse` and `columns`. Without `page` the answer is the whole (filtered, sorted) array; with it, the page
/// and its counts.
struct Listing {
  var page: Int?
  var pageSize = 100
  var name: String?
  var useRegex = false
  var sort: String?
  var sortReverse = false
  var columns: [[Substring]]?

  static let maxPageSize = 500

  init(query: [String: String]) throws(ManagementError) {
    if let page = query["page"] {
      guard let number = Int(page), number >= 1 else { throw .badRequest("page must be a positive integer") }
      self.page = number
    }
    if let size = query["page_size"] {
      guard let number = Int(size), number >= 1, number <= Self.maxPageSize else {
        throw .badRequest("page_size must be between 1 and \(Self.maxPageSize)")
      }
      self.pageSize = number
    }
    if let name = query["name"], !name.isEmpty { self.name = name }
    self.useRegex = query["use_regex"] == "true"
    if let sort = query["sort"], !sort.isEmpty { self.sort = sort }
    self.sortReverse = query["sort_reverse"] == "true"
    if let columns = query["columns"], !columns.isEmpty {
      self.columns = columns.split(separator: ",").map { $0.split(separator: ".") }
    }
  }

  /// Filters, sorts and pages items (JSON objects with a `name`).
  func apply(to items: [JSONValue]) throws(ManagementError) -> JSONValue {
    let total = items.count
    var selected = items
    if let name = self.name {
      if self.useRegex {
        guard let regex = try? Regex(name) else { throw .badRequest("invalid regular expression '\(name)'") }
        selected = selected.filter { item in
          guard let value = item["name"]?.stringValue else { return false }
          return (try? regex.firstMatch(in: value)) != nil
        }
      } else {
        let needle = name.lowercased()
        selected = selected.filter { $0["name"]?.stringValue?.lowercased().contains(needle) == true }
      }
    }
    if let sort = self.sort {
      let keys = selected.map { SortKey($0.value(atPath: sort)) }
      var order = Array(selected.indices)
      order.sort { keys[$0] < keys[$1] }
      if self.sortReverse { order.reverse() }
      selected = order.map { selected[$0] }
    } else if self.sortReverse {
      selected.reverse()
    }
    let filtered = selected.count
    if let page = self.page {
      let pageCount = max(1, (filtered + self.pageSize - 1) / self.pageSize)
      if page > pageCount { throw .badRequest("page out of range") }
      let start = (page - 1) * self.pageSize
      let slice = Array(selected[min(start, filtered)..<min(start + self.pageSize, filtered)])
      return .object([
        ("filtered_count", .int(filtered)), ("item_count", .int(slice.count)),
        ("items", .array(self.project(slice))), ("page", .int(page)), ("page_count", .int(pageCount)),
        ("page_size", .int(self.pageSize)), ("total_count", .int(total)),
      ])
    }
    return .array(self.project(selected))
  }

  /// One object with only the asked columns.
  func project(_ item: JSONValue) -> JSONValue {
    guard let columns = self.columns else { return item }
    return item.keeping(columns: columns)
  }

  private func project(_ items: [JSONValue]) -> [JSONValue] {
    guard let columns = self.columns else { return items }
    return items.map { $0.keeping(columns: columns) }
  }
}

/// An order over JSON values for `sort=`: missing first, then numbers, then strings (case-insensitively), then the
/// rest.
private struct SortKey: Comparable {
  enum Kind: Int { case missing, number, text, other }
  var kind: Kind
  var number = 0.0
  var text = ""

  init(_ value: JSONValue?) {
    switch value {
    case .int(let i)?:
      self.kind = .number
      self.number = Double(i)
    case .double(let d)?:
      self.kind = .number
      self.number = d
    case .bool(let b)?:
      self.kind = .number
      self.number = b ? 1 : 0
    case .string(let s)?:
      self.kind = .text
      self.text = s.lowercased()
    case nil, .null?: self.kind = .missing
    default: self.kind = .other
    }
  }

  static func < (a: SortKey, b: SortKey) -> Bool {
    if a.kind != b.kind { return a.kind.rawValue < b.kind.rawValue }
    switch a.kind {
    case .number: return a.number < b.number
    case .text: return a.text < b.text
    default: return false
    }
  }
}
