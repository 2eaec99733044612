// Filter rows of a table by text (input[data-filter="<table id>"]) and sort by a clicked header.
document.querySelectorAll("input[data-filter]").forEach(function (input) {
  var table = document.getElementById(input.dataset.filter);
  input.addEventListener("input", function () {
    var query = input.value.trim().toLowerCase();
    var shown = 0;
    table.tBodies[0].querySelectorAll("tr").forEach(function (row) {
      var match = !query || row.textContent.toLowerCase().indexOf(query) >= 0;
      row.hidden = !match;
      if (match) { shown += 1; }
    });
    table.dataset.shown = String(shown);
  });
});
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.tHead.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var ascending = th.dataset.order !== "asc";
      th.dataset.order = ascending ? "asc" : "desc";
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].textContent.trim(), y = b.cells[column].textContent.trim();
        var nx = parseFloat(x), ny = parseFloat(y);
        var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
