// Sorts the runs table by a column when its header is clicked (again: the other way). Number
// cells carry their raw value in data-sort; text cells sort by their text; empty cells go last
// either way. Inlined into the table page and allowed by its sha256 in the
// Content-Security-Policy, so it must stay byte-for-byte static.
(function () {
  "use strict";
  var table = document.getElementById("runs-table");
  if (!table) { return; }
  var body = table.tBodies[0];
  var heads = table.querySelectorAll("thead th[data-col]");

  function key(row, col) {
    var cell = row.cells[col];
    var raw = cell.getAttribute("data-sort");
    if (raw === null) { return cell.textContent.trim().toLowerCase(); }
    return raw === "" ? null : parseFloat(raw);
  }

  function sortBy(th) {
    var col = parseInt(th.getAttribute("data-col"), 10);
    var descending = th.getAttribute("aria-sort") === "ascending";
    for (var i = 0; i < heads.length; i++) { heads[i].setAttribute("aria-sort", "none"); }
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (ra, rb) {
      var a = key(ra, col), b = key(rb, col);
      if (a === null || b === null) { return (a === null) - (b === null); }
      var order = a < b ? -1 : (a > b ? 1 : 0);
      return descending ? -order : order;
    });
    for (var j = 0; j < rows.length; j++) { body.appendChild(rows[j]); }
  }

  for (var k = 0; k < heads.length; k++) {
    heads[k].querySelector("button").addEventListener("click", sortBy.bind(null, heads[k]));
  }
})();
