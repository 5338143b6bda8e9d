'use strict'
// The user's path through a real `hutch serve` with a pinned release of the JS SDK (`e2b`
// on npm). tests/compat/test_matrix.py runs it with `node --test`, NODE_PATH naming that
// release's node_modules, and E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY naming the
// serve. Each test's name starts with the features it proves, before the colon; the
// matrix reads them for docs/compat.md.

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { randomUUID } = require('node:crypto')
const { Sandbox, CommandExitError, FilesystemEventType } = require('e2b')

const TEMPLATE = 'busybox'

async function withSandbox(opts, body) {
  const sbx = await Sandbox.create(TEMPLATE, { timeoutMs: 120_000, ...opts })
  try {
    return await body(sbx)
  } finally {
    await sbx.kill()
  }
}

// Polls `fetch` until `ok` holds: a count of tries, not a deadline.
async function poll(fetch, ok, tries = 100) {
  let value = await fetch()
  for (let i = 0; i < tries && !ok(value); i++) {
    await new Promise((resolve) => setTimeout(resolve, 50))
    value = await fetch()
  }
  return value
}

test('create, commands, metadata, info, list, kill: run a command, find it by metadata, kill it', async () => {
  const tag = randomUUID().slice(0, 8)
  const sbx = await Sandbox.create(TEMPLATE, {
    timeoutMs: 120_000,
    metadata: { tag },
    envs: { GREETING: 'hi' },
  })
  let killed = false
  try {
    const out = []
    const err = []
    const result = await sbx.commands.run('echo "$GREETING"; echo oops >&2; hostname', {
      onStdout: (d) => out.push(d),
      onStderr: (d) => err.push(d),
    })
    assert.equal(result.exitCode, 0)
    assert.equal(out.join(''), `hi\n${sbx.sandboxId}\n`)
    assert.equal(err.join(''), 'oops\n')
    await assert.rejects(sbx.commands.run('echo bad >&2; exit 7'), (e) => {
      assert.ok(e instanceof CommandExitError)
      assert.equal(e.exitCode, 7)
      assert.equal(e.stderr, 'bad\n')
      return true
    })

    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.equal(info.templateId, TEMPLATE)
    assert.deepEqual(info.metadata, { tag })
    assert.equal(info.state, 'running')

    const listed = await Sandbox.list({ query: { metadata: { tag } } }).nextItems()
    assert.deepEqual(listed.map((s) => s.sandboxId), [sbx.sandboxId])
    killed = await sbx.kill()
    assert.equal(killed, true)
  } finally {
    if (!killed) await sbx.kill()
  }
  assert.equal(await Sandbox.kill(sbx.sandboxId), false)
  assert.deepEqual(await Sandbox.list({ query: { metadata: { tag } } }).nextItems(), [])
})

test('commands: stdin, background commands, wait and kill', async () => {
  await withSandbox({}, async (sbx) => {
    const cat = await sbx.commands.run('cat', { background: true, stdin: true })
    await sbx.commands.sendStdin(cat.pid, 'hello ')
    await cat.sendStdin('stdin\n')
    await cat.closeStdin()
    assert.equal((await cat.wait()).stdout, 'hello stdin\n')

    const sleeper = await sbx.commands.run('sleep 600', { background: true })
    assert.ok((await sbx.commands.list()).some((p) => p.pid === sleeper.pid))
    assert.equal(await sleeper.kill(), true)
    await assert.rejects(sleeper.wait(), CommandExitError)
    assert.equal(await sbx.commands.kill(sleeper.pid), false)
  })
})

test('files, metadata: write, read, list, info with metadata, remove', async () => {
  await withSandbox({}, async (sbx) => {
    const written = await sbx.files.write('notes/a.txt', 'hi', { metadata: { owner: 'me' } })
    assert.equal(written.name, 'a.txt')
    assert.equal(await sbx.files.read('notes/a.txt'), 'hi')
    const bytes = await sbx.files.read('notes/a.txt', { format: 'bytes' })
    assert.deepEqual(Array.from(bytes), [104, 105])
    assert.deepEqual((await sbx.files.list('notes')).map((e) => e.name), ['a.txt'])
    const info = await sbx.files.getInfo('notes/a.txt')
    assert.equal(info.size, 2)
    assert.deepEqual(info.metadata, { owner: 'me' })
    await sbx.files.write([
      { path: '/tmp/many/1.txt', data: 'one' },
      { path: '/tmp/many/2.txt', data: 'two' },
    ])
    assert.equal(await sbx.files.read('/tmp/many/2.txt'), 'two')
    await sbx.files.remove('notes/a.txt')
    assert.equal(await sbx.files.exists('notes/a.txt'), false)
  })
})

test('watch: a watched directory reports writes and removes', async () => {
  await withSandbox({}, async (sbx) => {
    await sbx.files.makeDir('/tmp/watched')
    const events = []
    const handle = await sbx.files.watchDir('/tmp/watched', (e) => events.push(e))
    try {
      await sbx.files.write('/tmp/watched/a.txt', 'one')
      await sbx.commands.run('rm /tmp/watched/a.txt')
      await poll(() => events, (es) => es.some((e) => e.type === FilesystemEventType.REMOVE))
      const kinds = events.map((e) => `${e.name}:${e.type}`)
      assert.ok(kinds.includes(`a.txt:${FilesystemEventType.CREATE}`), kinds.join(' '))
      assert.ok(kinds.includes(`a.txt:${FilesystemEventType.REMOVE}`), kinds.join(' '))
    } finally {
      await handle.stop()
    }
  })
})

test('pty: input, resize, exit code and kill', async () => {
  await withSandbox({}, async (sbx) => {
    const out = []
    const term = await sbx.pty.create({ rows: 24, cols: 80, onData: (d) => out.push(...d) })
    await sbx.pty.resize(term.pid, { rows: 50, cols: 120 })
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode('stty size; echo $((6*7))x; exit 3\n'))
    await assert.rejects(term.wait(), (e) => e instanceof CommandExitError && e.exitCode === 3)
    const text = new TextDecoder().decode(new Uint8Array(out))
    assert.ok(text.includes('50 120') && text.includes('42x'), text)

    const other = await sbx.pty.create({ rows: 24, cols: 80, onData: () => {} })
    assert.equal(await sbx.pty.kill(other.pid), true)
    await assert.rejects(other.wait(), CommandExitError)
  })
})

test('connect, pause, list: pause keeps files and processes, connect resumes', async () => {
  const tag = randomUUID().slice(0, 8)
  await withSandbox({ metadata: { tag } }, async (sbx) => {
    await sbx.files.write('/tmp/kept.txt', 'kept')
    const sleeper = await sbx.commands.run('sleep 600', { background: true })
    assert.equal(await sbx.pause(), true)
    const paused = await Sandbox.list({ query: { metadata: { tag }, state: ['paused'] } }).nextItems()
    assert.deepEqual(paused.map((s) => [s.sandboxId, s.state]), [[sbx.sandboxId, 'paused']])

    const again = await Sandbox.connect(sbx.sandboxId)
    assert.equal((await again.getInfo()).state, 'running')
    assert.equal(await again.files.read('/tmp/kept.txt'), 'kept')
    assert.ok((await again.commands.list()).some((p) => p.pid === sleeper.pid))
    await again.setTimeout(600_000)
    assert.ok((await again.getInfo()).endAt > (await sbx.getInfo()).startedAt)
    assert.equal(await again.isRunning(), true)
  })
})
