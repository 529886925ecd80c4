// lang-agent conversation viewer. The pages work without this script; it adds local times,
// the reader's time zone for the date filters, and live updates over server-sent events.
// New HTML comes from the server's own (escaped) fragments; no message text is ever turned
// into markup here.
(function () {
  'use strict';

  function localize(root) {
    var today = new Date().toDateString();
    root.querySelectorAll('time[datetime]').forEach(function (el) {
      var d = new Date(el.getAttribute('datetime'));
      if (isNaN(d.getTime())) return;
      el.textContent = d.toDateString() === today
        ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
        : d.toLocaleString([], { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
      el.title = d.toLocaleString();
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    localize(document);
    var tz = document.getElementById('tz');
    if (tz) tz.value = String(new Date().getTimezoneOffset());

    var messages = document.getElementById('messages');
    var sidebarList = document.getElementById('sidebar-list');
    var live = document.getElementById('live');
    var current = messages ? messages.dataset.conversation : null;

    if (messages) {
      var firstMatch = messages.querySelector('.msg.match');
      if (location.hash) {
        /* the browser scrolls to the anchor */
      } else if (firstMatch) {
        firstMatch.scrollIntoView({ block: 'center' });
      } else {
        messages.scrollTop = messages.scrollHeight;
      }
    }

    if (!window.EventSource || !sidebarList) return;

    var fresh = {};
    var sidebarTimer = null;
    function refreshSidebar(id) {
      if (id) fresh[id] = true;
      if (sidebarTimer) return;
      sidebarTimer = setTimeout(function () {
        sidebarTimer = null;
        var marked = fresh;
        fresh = {};
        var params = new URLSearchParams(location.search);
        if (current) params.set('selected', current);
        fetch('/fragments/sidebar?' + params.toString(), { credentials: 'same-origin' })
          .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
          .then(function (html) {
            var scroll = sidebarList.scrollTop;
            sidebarList.innerHTML = html;
            sidebarList.scrollTop = scroll;
            localize(sidebarList);
            sidebarList.querySelectorAll('a.conv').forEach(function (a) {
              if (marked[a.dataset.id]) a.classList.add('fresh');
            });
          })
          .catch(function () { /* the next event tries again */ });
      }, 200);
    }

    var loading = false;
    var again = false;
    function loadNewMessages() {
      if (!messages) return;
      if (loading) { again = true; return; }
      loading = true;
      var url = messages.dataset.fragment;
      url += (url.indexOf('?') < 0 ? '?' : '&') + 'after=' + encodeURIComponent(messages.dataset.last || '0');
      fetch(url, { credentials: 'same-origin' })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          var nearBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 160;
          var holder = document.createElement('template');
          holder.innerHTML = html;
          holder.content.querySelectorAll('article.msg').forEach(function (article) {
            if (document.getElementById(article.id)) return;
            article.classList.add('arrived');
            messages.appendChild(article);
            messages.dataset.last = article.dataset.seq;
          });
          localize(messages);
          var count = document.getElementById('message-count');
          if (count) count.textContent = String(messages.querySelectorAll('article.msg').length);
          if (nearBottom) messages.scrollTop = messages.scrollHeight;
        })
        .catch(function () { /* the next event tries again */ })
        .then(function () {
          loading = false;
          if (again) { again = false; loadNewMessages(); }
        });
    }

    function changed(kind, id) {
      if (current && (id === current || id === null)) {
        if (kind === 'conversation_deleted') {
          document.getElementById('deleted-notice').hidden = false;
          document.querySelectorAll('#delete, #download').forEach(function (el) { el.hidden = true; });
        } else {
          loadNewMessages();
        }
      }
      refreshSidebar(kind === 'conversation_deleted' ? null : id);
    }

    var opened = false;
    var events = new EventSource('/api/events');
    events.onopen = function () {
      live.dataset.state = 'on';
      live.title = 'Live updates on';
      // After a reconnect, catch up on whatever happened while away.
      if (opened) changed('conversation_updated', null);
      opened = true;
    };
    events.onerror = function () {
      live.dataset.state = 'off';
      live.title = 'Live updates reconnecting';
    };
    ['conversation_new', 'conversation_updated', 'conversation_deleted'].forEach(function (kind) {
      events.addEventListener(kind, function (e) {
        var id = null;
        try { id = JSON.parse(e.data).conversation_id; } catch (_) { /* treat as "something" */ }
        changed(kind, id);
      });
    });
  });
})();
