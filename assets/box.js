// lang-agent box page: the try-it chat. Sends the form to /box/try, shows the answer as it
// streams (server-sent events read from the fetch body, since EventSource cannot POST), then
// swaps in the server's own rendered messages of the conversation (/fragments/messages/{id}),
// so tool steps look exactly as in the conversation view. Streamed text is only ever set as
// textContent; HTML comes from the server's escaped fragments.
(function () {
  'use strict';

  document.addEventListener('DOMContentLoaded', function () {
    var form = document.getElementById('try-form');
    if (!form || !window.fetch || !window.TextDecoder) return;
    var chat = document.getElementById('try-chat');
    var status = document.getElementById('try-status');
    var conversation = document.getElementById('try-conversation');
    var profile = document.getElementById('try-profile');
    var input = document.getElementById('try-text');
    var send = document.getElementById('try-send');
    var link = document.getElementById('try-link');

    function reset() {
      conversation.value = '';
      chat.replaceChildren();
      status.textContent = '';
      link.hidden = true;
    }
    profile.addEventListener('change', reset);
    document.getElementById('try-new').addEventListener('click', reset);

    function bubble(kind, text) {
      var article = document.createElement('article');
      article.className = 'msg ' + kind + ' arrived';
      var body = document.createElement('div');
      body.className = 'bubble';
      var content = document.createElement('div');
      content.className = 'text';
      content.textContent = text;
      body.appendChild(content);
      article.appendChild(body);
      chat.appendChild(article);
      chat.scrollTop = chat.scrollHeight;
      return content;
    }

    // Calls onEvent(name, data) for each server-sent event in the response body.
    function readEvents(response, onEvent) {
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = '';
      function dispatch(block) {
        var name = 'message';
        var data = [];
        block.split('\n').forEach(function (line) {
          if (line.indexOf('event:') === 0) name = line.slice(6).trim();
          else if (line.indexOf('data:') === 0) data.push(line.slice(5).replace(/^ /, ''));
        });
        if (data.length) onEvent(name, JSON.parse(data.join('\n')));
      }
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) {
            if (buffer.trim()) dispatch(buffer);
            return;
          }
          buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n?/g, '\n');
          var end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            dispatch(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
          }
          return pump();
        });
      }
      return pump();
    }

    function showConversation(id) {
      link.href = '/c/' + encodeURIComponent(id);
      link.hidden = false;
      return fetch('/fragments/messages/' + encodeURIComponent(id), { credentials: 'same-origin' })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(new Error('HTTP ' + r.status)); })
        .then(function (html) {
          chat.innerHTML = html;
          chat.scrollTop = chat.scrollHeight;
        });
    }

    form.addEventListener('submit', function (e) {
      e.preventDefault();
      var text = input.value.trim();
      if (!text || send.disabled) return;
      var body = new URLSearchParams(new FormData(form));
      input.value = '';
      bubble('human', text);
      var answer = bubble('ai', '');
      send.disabled = true;
      status.textContent = 'Thinking…';
      var ended = null;
      fetch('/box/try', { method: 'POST', body: body, credentials: 'same-origin' })
        .then(function (r) {
          if (r.redirected) throw new Error('your login has expired; reload the page and log in');
          var type = r.headers.get('content-type') || '';
          if (!r.ok || type.indexOf('text/event-stream') < 0) {
            return r.text().then(function (t) {
              var message = t;
              try { message = JSON.parse(t).error || t; } catch (_) { /* plain text */ }
              throw new Error(message);
            });
          }
          return readEvents(r, function (name, data) {
            if (data.conversation) conversation.value = data.conversation;
            if (name === 'text') {
              answer.textContent += data.text;
              chat.scrollTop = chat.scrollHeight;
            } else if (name === 'done' || name === 'failed') {
              ended = { name: name, data: data };
            }
          });
        })
        .then(function () {
          if (!ended) throw new Error('the answer stopped before it was complete');
          status.textContent = ended.name === 'done'
            ? 'Done (' + ended.data.model + ', ' + ended.data.finish + ').'
            : 'Failed: ' + ended.data.error;
          status.dataset.state = ended.name;
          return showConversation(ended.data.conversation);
        })
        .catch(function (err) {
          status.textContent = 'Failed: ' + err.message;
          status.dataset.state = 'failed';
        })
        .then(function () {
          send.disabled = false;
          input.focus();
        });
    });
  });
})();
