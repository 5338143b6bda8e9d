'use strict'
// The MCP gateway through a real `hutch serve` with the official JS SDK (`e2b`) and the
// MCP TypeScript SDK's client (both pinned in mcp/package.json), unchanged.
// tests/e2e/test_mcp_js.py runs it with `node --test`, NODE_PATH naming the installed
// node_modules, and E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY naming the serve.

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { Sandbox, SandboxError } = require('e2b')
const { Client } = require('@modelcontextprotocol/sdk/client/index.js')
const { StreamableHTTPClientTransport } = require('@modelcontextprotocol/sdk/client/streamableHttp.js')

async function listed() {
  const paginator = Sandbox.list()
  return new Set((await paginator.nextItems()).map((s) => s.sandboxId))
}

test('create with mcp, then list and call namespaced tools of both servers', async () => {
  const sbx = await Sandbox.create({
    mcp: { filesystem: { paths: ['/home/user'] }, memory: {} },
    timeoutMs: 300_000,
  })
  try {
    assert.equal((await sbx.getInfo()).templateId, 'mcp-gateway')
    const url = new URL(sbx.getMcpUrl())
    assert.ok(url.host.startsWith(`50005-${sbx.sandboxId}.`) && url.pathname === '/mcp')
    const token = await sbx.getMcpToken()
    assert.ok(token)
    // E2B_SANDBOX_URL's form: the proxy routes by the sandbox's id and the gateway's port.
    const route = { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '50005' }
    const proxied = `${process.env.E2B_SANDBOX_URL}/mcp`

    const bare = await fetch(proxied, { method: 'POST', headers: route, body: '{}' })
    assert.equal(bare.status, 401)

    const client = new Client({ name: 'hutch-e2e', version: '1.0.0' })
    await client.connect(new StreamableHTTPClientTransport(new URL(proxied), {
      requestInit: { headers: { ...route, Authorization: `Bearer ${token}` } },
    }))
    try {
      const names = (await client.listTools()).tools.map((t) => t.name)
      assert.ok(names.includes('filesystem__list_directory'), names.join(' '))
      assert.ok(names.includes('memory__create_entities'), names.join(' '))
      await sbx.files.write('/home/user/from-js.txt', 'hello')
      const dir = await client.callTool({ name: 'filesystem__list_directory', arguments: { path: '/home/user' } })
      assert.ok(dir.content[0].text.includes('from-js.txt'), dir.content[0].text)
      const made = await client.callTool({
        name: 'memory__create_entities',
        arguments: { entities: [{ name: 'js', entityType: 'sdk', observations: ['from node'] }] },
      })
      assert.ok(!made.isError)
      const found = await client.callTool({ name: 'memory__search_nodes', arguments: { query: 'node' } })
      assert.ok(found.content[0].text.includes('from node'), found.content[0].text)
    } finally {
      await client.close()
    }
    const again = await Sandbox.connect(sbx.sandboxId)
    assert.equal(await again.getMcpToken(), token)
  } finally {
    await sbx.kill()
  }
})

test('a bad config fails the create and leaves no sandbox', async () => {
  const before = await listed()
  await assert.rejects(
    Sandbox.create({ mcp: { nosuchserver: {} } }),
    (e) => e instanceof SandboxError && /^Failed to start MCP gateway: nosuchserver: /.test(e.message),
  )
  assert.deepEqual(await listed(), before)
})
