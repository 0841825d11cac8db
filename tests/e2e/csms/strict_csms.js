#!/usr/bin/env node
'use strict';
/*
 * Strict OCPP 1.6J central system for evsed's end-to-end tests.
 *
 * An independent implementation (npm `ocpp-rpc` in strictMode, which validates
 * every frame against the official OCPP 1.6 JSON schemas). It is driven by the
 * Python wrapper tests/e2e/strict_csms.py through JSON lines:
 *
 *   usage: node strict_csms.js [PORT]        (PORT 0 or absent = pick a free one)
 *
 * stdout events (one JSON object per line):
 *   {"event":"listening","port":N}
 *   {"event":"stopped"}
 *   {"event":"connected","identity":..,"protocol":..,"path":..}
 *   {"event":"disconnected","identity":..,"code":..,"reason":..}
 *   {"event":"call","identity":..,"action":..,"payload":..,"messageId":..,"ts":ms}
 *        every CALL the charge point sends (emitted on arrival, before validation)
 *   {"event":"answered","identity":..,"action":..,"messageId":..,"result":..}
 *   {"event":"strict_error","identity":..,"kind":..,"action":..,"side":"cp"|"csms",..}
 *        kind: "call" (CP sent an invalid CALL), "response" (CP returned an invalid
 *        CALLRESULT), "bad_message" (CP sent an unparseable / unexpected frame),
 *        "subprotocol" (CP did not offer ocpp1.6), "unknown_action" (CP sent an action
 *        OCPP 1.6 does not define for CP->CS), "csms" (the harness itself produced an
 *        invalid frame: a harness bug)
 *   {"event":"message","identity":..,"message":"<raw text>","outbound":false}
 *        every frame received from the charge point
 *   {"event":"reply","id":..,"result":..} | {"event":"reply","id":..,"error":{"code":..,"message":..}}
 *   {"event":"log","message":..}
 *
 * stdin commands (one JSON object per line, each with an "id"; every command is
 * answered by exactly one "reply" event with the same id):
 *   {"id":1,"cmd":"call","identity":"CP001","action":"RemoteStartTransaction","payload":{..},"timeout":10}
 *        -> result = the charge point's CALLRESULT payload, or error {code,message,details}
 *   {"id":2,"cmd":"set", ...knobs}   -> result = the full knob state
 *        bootStatus: "Accepted"|"Pending"|"Rejected"; heartbeatInterval: s (Boot interval);
 *        authorize: {"TAG": "Accepted"|"Blocked"|"Expired"|"Invalid"|"ConcurrentTx"};
 *        authorizeDefault: status for tags not in the map; nextTransactionId: int;
 *        respond: true|false|{"Action": bool}  (false = never answer, for timeout tests);
 *        stopTransactionStatus: idTagInfo status returned in StopTransaction.conf (optional)
 *        startTransactionStatus: idTagInfo status returned in StartTransaction.conf (optional;
 *          null (default) = the authorize/authorizeDefault status, as for Authorize)
 *        parentIdTag: {"TAG": "PARENT"}: parentIdTag added to every idTagInfo for TAG (merged like authorize)
 *        expiryDate: {"TAG": "<RFC 3339>"}: expiryDate added to every idTagInfo for TAG (merged like authorize)
 *        dataTransfer: DataTransfer.conf payload for every CP DataTransfer.req, e.g.
 *          {"status":"Accepted","data":"pong"}; null (default) = {"status":"UnknownVendorId"}
 *        callError: {"Action": N|true}  answer the next N CALLs of Action (true = every one) with a
 *          CALLERROR InternalError instead of a CALLRESULT; N counts down (replaces the whole map,
 *          {} = off). Each such answer emits
 *          {"event":"answered_error","identity":..,"action":..,"messageId":..,"code":"InternalError"}
 *        answerDelayMs: {"Action": ms}  answer CALLs of Action only after ms milliseconds, like a CSMS
 *          behind real network latency (replaces the whole map, {} = no delay; default {})
 *   {"id":3,"cmd":"raw","identity":..,"text":"<frame>","timeout":3}
 *        -> result = {"message": "<first CALLRESULT/CALLERROR text sent back>" | null}
 *   {"id":4,"cmd":"close","identity":..,"code":1000}
 *   {"id":5,"cmd":"stop","force":false}  stop listening and close every client (CSMS down)
 *   {"id":6,"cmd":"listen"}              listen again on the same port (CSMS back)
 *   {"id":7,"cmd":"clients"}             -> result = [identity, ...]
 *   {"id":8,"cmd":"exit"}
 */

const readline = require('node:readline');
const {RPCServer, createRPCError, NOREPLY} = require('ocpp-rpc');

const HOST = '127.0.0.1';
let port = parseInt(process.argv[2] || '0', 10) || 0;

// Actions OCPP 1.6 defines for the charge point -> central system direction.
const CP_ACTIONS = new Set([
    'Authorize', 'BootNotification', 'DataTransfer', 'DiagnosticsStatusNotification',
    'FirmwareStatusNotification', 'Heartbeat', 'MeterValues', 'StartTransaction',
    'StatusNotification', 'StopTransaction',
    // security extension (schemas are part of ocpp-rpc's ocpp1.6 set)
    'LogStatusNotification', 'SecurityEventNotification', 'SignCertificate',
    'SignedFirmwareStatusNotification',
]);

// CALLERROR codes OCPP-J 1.6 allows (with both the spec's and the errata's spellings).
const OCPP16_ERROR_CODES = new Set([
    'NotImplemented', 'NotSupported', 'InternalError', 'ProtocolError', 'SecurityError',
    'FormationViolation', 'FormatViolation', 'PropertyConstraintViolation',
    'OccurenceConstraintViolation', 'OccurrenceConstraintViolation', 'TypeConstraintViolation',
    'GenericError',
]);

const knobs = {
    bootStatus: 'Accepted',
    heartbeatInterval: 60,
    authorize: {},
    authorizeDefault: 'Accepted',
    nextTransactionId: 1,
    respond: true,
    stopTransactionStatus: null,
    startTransactionStatus: null,
    parentIdTag: {},
    expiryDate: {},
    dataTransfer: null,
    callError: {},
    answerDelayMs: {},
};

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

function log(message) {
    emit({event: 'log', message: String(message)});
}

function nowIso() {
    return new Date().toISOString(); // always ends with Z
}

function shouldRespond(action) {
    const r = knobs.respond;
    if (r === true || r === undefined || r === null) return true;
    if (r === false) return false;
    if (typeof r === 'object' && action in r) return !!r[action];
    return true;
}

// callError knob: true if this CALL of `action` is to be answered with a CALLERROR (counts down).
function takeCallError(action) {
    const ce = knobs.callError;
    if (!ce || typeof ce !== 'object' || !(action in ce)) return false;
    const n = ce[action];
    if (n === true) return true;
    if (typeof n === 'number' && n > 0) {
        ce[action] = n - 1;
        return true;
    }
    return false;
}

function idTagInfo(idTag) {
    const status = (idTag in knobs.authorize) ? knobs.authorize[idTag] : knobs.authorizeDefault;
    const info = {status};
    if (idTag in knobs.expiryDate) info.expiryDate = knobs.expiryDate[idTag];
    if (idTag in knobs.parentIdTag) info.parentIdTag = knobs.parentIdTag[idTag];
    return info;
}

function errorInfo(err) {
    if (!err) return null;
    return {
        name: err.name,
        message: err.message,
        code: err.rpcErrorCode,
        details: err.details,
        errors: err.errors,   // ajv errors, if any
    };
}

const clients = new Map();   // identity -> RPCServerClient (latest connection)
let httpServer = null;

const server = new RPCServer({
    protocols: ['ocpp1.6'],
    strictMode: true,
    respondWithDetailedErrors: true,
    callTimeoutMs: 30000,
});

server.auth((accept, reject, handshake) => {
    if (!handshake.protocols.has('ocpp1.6')) {
        emit({
            event: 'strict_error', side: 'cp', kind: 'subprotocol', identity: handshake.identity,
            offered: Array.from(handshake.protocols),
            message: 'charge point did not offer the ocpp1.6 WebSocket subprotocol',
        });
        reject(400, 'ocpp1.6 subprotocol required');
        return;
    }
    accept({path: handshake.request.url}, 'ocpp1.6');
});

server.on('upgradeAborted', ({error, identity}) => {
    log(`upgrade aborted for ${identity}: ${error && error.message}`);
});

server.on('client', (client) => {
    const identity = client.identity;
    client._rawIds = new Set();       // message ids of frames sent via `raw`
    client._rawWildUntil = 0;          // tolerate id-less answers to raw frames until this ts
    client._rawWaiters = new Set();
    client._lateIds = new Set();       // ids of our calls that timed out
    client._rawErrorCodes = new Map();  // message id -> errorCode as sent by the CP
    clients.set(identity, client);
    emit({
        event: 'connected', identity, protocol: client.protocol,
        path: client.session && client.session.path,
    });

    client.on('close', ({code, reason}) => {
        if (clients.get(identity) === client) clients.delete(identity);
        emit({event: 'disconnected', identity, code, reason: reason ? String(reason) : ''});
    });

    client.on('message', ({message, outbound}) => {
        if (outbound) return;
        const text = String(message);
        emit({event: 'message', identity, message: text, outbound: false});
        let parsed = null;
        try { parsed = JSON.parse(text); } catch (e) { /* not JSON */ }
        if (Array.isArray(parsed) && parsed[0] === 4) {
            const code = parsed[2];
            client._rawErrorCodes.set(parsed[1], [code, parsed[3], parsed[4]]);
            if (!OCPP16_ERROR_CODES.has(code)) {
                emit({
                    event: 'strict_error', side: 'cp', kind: 'error_code', identity, message: text,
                    error: {message: `CALLERROR code ${JSON.stringify(code)} is not an OCPP-J 1.6 error code`},
                });
            }
            if (parsed.length !== 5 || typeof parsed[3] !== 'string'
                || parsed[4] === null || typeof parsed[4] !== 'object' || Array.isArray(parsed[4])) {
                emit({
                    event: 'strict_error', side: 'cp', kind: 'bad_message', identity, message: text,
                    error: {message: 'CALLERROR must be [4, id, code, description(string), details(object)]'},
                });
            }
        }
        if (Array.isArray(parsed) && (parsed[0] === 3 || parsed[0] === 4)) {
            for (const w of Array.from(client._rawWaiters)) w(text, parsed);
        }
    });

    client.on('call', ({outbound, payload}) => {
        if (outbound) return;
        const [, messageId, action, params] = payload;
        emit({event: 'call', identity, action, payload: params, messageId, ts: Date.now()});
        if (!CP_ACTIONS.has(action)) {
            emit({
                event: 'strict_error', side: 'cp', kind: 'unknown_action', identity, action,
                payload: params, message: `${action} is not a charge-point-initiated OCPP 1.6 action`,
            });
        }
    });

    client.on('strictValidationFailure', (ev) => {
        // outbound: frame produced by this CSMS (harness bug); inbound: frame from the CP
        const side = ev.outbound ? 'csms' : 'cp';
        let kind;
        if (side === 'csms') kind = 'csms';
        else kind = ev.isCall ? 'call' : 'response';
        emit({
            event: 'strict_error', side, kind, identity, action: ev.method, messageId: ev.messageId,
            payload: ev.params, result: ev.result, error: errorInfo(ev.error),
        });
    });

    client.on('badMessage', ({buffer, error, response}) => {
        const text = buffer ? buffer.toString('utf8') : '';
        let parsed = null;
        try { parsed = JSON.parse(text); } catch (e) { /* not JSON */ }
        if (Array.isArray(parsed) && (parsed[0] === 3 || parsed[0] === 4)) {
            const msgId = parsed[1];
            if (client._rawIds.has(msgId) || Date.now() < client._rawWildUntil) {
                return; // answer to a frame we injected with `raw`: expected
            }
            if (client._lateIds.has(msgId)) {
                log(`late answer from ${identity} to timed-out call ${msgId}`);
                return;
            }
        }
        emit({
            event: 'strict_error', side: 'cp', kind: 'bad_message', identity, message: text,
            error: errorInfo(error), response,
        });
    });

    client.on('callError', ({method, params, error}) => {
        log(`answered ${method} from ${identity} with CALLERROR: ${error && error.message}`);
    });

    const answer = (action, fn) => {
        client.handle(action, async ({params, messageId}) => {
            if (!shouldRespond(action)) {
                log(`not answering ${action} ${messageId} (respond=false)`);
                return NOREPLY;
            }
            if (takeCallError(action)) {
                emit({event: 'answered_error', identity, action, messageId, code: 'InternalError'});
                throw createRPCError('InternalError', `${action} refused by the test harness (callError knob)`);
            }
            const delayMs = (knobs.answerDelayMs || {})[action];
            if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
            const result = await fn(params);
            emit({event: 'answered', identity, action, messageId, result});
            return result;
        });
    };

    answer('BootNotification', () => ({
        status: knobs.bootStatus,
        currentTime: nowIso(),
        interval: knobs.heartbeatInterval,
    }));
    answer('Heartbeat', () => ({currentTime: nowIso()}));
    answer('StatusNotification', () => ({}));
    answer('Authorize', (p) => ({idTagInfo: idTagInfo(p.idTag)}));
    answer('StartTransaction', (p) => {
        const transactionId = knobs.nextTransactionId;
        knobs.nextTransactionId += 1;
        const info = idTagInfo(p.idTag);
        if (knobs.startTransactionStatus) info.status = knobs.startTransactionStatus;
        return {transactionId, idTagInfo: info};
    });
    answer('StopTransaction', (p) => {
        if (p.idTag === undefined) return {};
        const info = idTagInfo(p.idTag);
        if (knobs.stopTransactionStatus) info.status = knobs.stopTransactionStatus;
        return {idTagInfo: info};
    });
    answer('MeterValues', () => ({}));
    answer('DataTransfer', () => (knobs.dataTransfer ? {...knobs.dataTransfer} : {status: 'UnknownVendorId'}));
    answer('DiagnosticsStatusNotification', () => ({}));
    answer('FirmwareStatusNotification', () => ({}));
    answer('SecurityEventNotification', () => ({}));
    answer('LogStatusNotification', () => ({}));
    answer('SignedFirmwareStatusNotification', () => ({}));
    answer('SignCertificate', () => ({status: 'Rejected'}));
    client.handle(({method}) => {
        throw createRPCError('NotImplemented', `${method} is not implemented by this CSMS`);
    });
});

async function startListening() {
    if (httpServer) return port;
    httpServer = await server.listen(port, HOST);
    port = httpServer.address().port;
    emit({event: 'listening', port});
    return port;
}

async function stopListening(force) {
    const hs = httpServer;
    httpServer = null;
    if (hs) {
        await new Promise((resolve) => {
            hs.close(() => resolve());
            for (const c of clients.values()) {
                if (force) c.close({force: true});
                else c.close({code: 1001, reason: 'CSMS going down'});
            }
        });
    }
    // make sure nothing survived
    await Promise.all(Array.from(clients.values()).map((c) => c.close({force: true})));
    emit({event: 'stopped'});
}

function requireClient(identity) {
    const client = clients.get(identity);
    if (!client) {
        const e = new Error(`no connected charge point with identity ${identity}`);
        e.rpcErrorCode = 'NotConnected';
        throw e;
    }
    return client;
}

async function sendRaw(client, text, timeoutS) {
    let msgId = null;
    try {
        const parsed = JSON.parse(text);
        if (Array.isArray(parsed) && typeof parsed[1] === 'string') msgId = parsed[1];
    } catch (e) { /* malformed on purpose */ }
    if (msgId !== null) client._rawIds.add(msgId);
    const waitMs = Math.max(0, (timeoutS ?? 3) * 1000);
    // An answer to a frame without a usable id cannot be correlated: accept any
    // CALLRESULT/CALLERROR that matches no pending call for a while.
    if (msgId === null) client._rawWildUntil = Date.now() + waitMs + 2000;
    return await new Promise((resolve) => {
        let done = false;
        const finish = (message) => {
            if (done) return;
            done = true;
            client._rawWaiters.delete(waiter);
            clearTimeout(timer);
            resolve({message});
        };
        const waiter = (textIn, parsed) => {
            const inId = parsed[1];
            if (msgId !== null) {
                if (inId === msgId) finish(textIn);
            } else if (!client._pendingCalls.has(inId)) {
                finish(textIn);
            }
        };
        client._rawWaiters.add(waiter);
        const timer = setTimeout(() => finish(null), waitMs);
        try {
            client.sendRaw(text);
        } catch (e) {
            finish(null);
        }
    });
}

async function handleCommand(cmd) {
    switch (cmd.cmd) {
        case 'call': {
            const client = requireClient(cmd.identity);
            const timeoutMs = Math.round((cmd.timeout ?? 10) * 1000);
            const params = cmd.payload ?? {};
            let msgId = null;
            const onCall = ({outbound, payload}) => {
                if (outbound && payload[3] === params) msgId = payload[1];
            };
            client.on('call', onCall);
            try {
                return await client.call(cmd.action, params, {callTimeoutMs: timeoutMs});
            } catch (err) {
                if (err && err.name === 'TimeoutError' && msgId) client._lateIds.add(msgId);
                if (msgId && client._rawErrorCodes.has(msgId)) {
                    // report the code and description exactly as the charge point sent them
                    const [code, description, details] = client._rawErrorCodes.get(msgId);
                    err.rpcErrorCode = code;
                    err.rpcErrorMessage = typeof description === 'string' ? description : String(description);
                    err.details = details;
                }
                throw err;
            } finally {
                client.off('call', onCall);
                if (msgId) client._rawErrorCodes.delete(msgId);
            }
        }
        case 'set': {
            for (const [k, v] of Object.entries(cmd)) {
                if (k === 'id' || k === 'cmd') continue;
                if (!(k in knobs)) throw new Error(`unknown knob ${k}`);
                if (k === 'authorize' || k === 'parentIdTag' || k === 'expiryDate') knobs[k] = {...knobs[k], ...v};
                else knobs[k] = v;
            }
            return knobs;
        }
        case 'raw': {
            const client = requireClient(cmd.identity);
            return await sendRaw(client, cmd.text, cmd.timeout);
        }
        case 'close': {
            const client = requireClient(cmd.identity);
            const res = await client.close({code: cmd.code ?? 1000, reason: cmd.reason ?? '', force: !!cmd.force});
            return res || null;
        }
        case 'stop':
            await stopListening(!!cmd.force);
            return null;
        case 'listen':
            return {port: await startListening()};
        case 'clients':
            return Array.from(clients.keys());
        case 'exit':
            setImmediate(shutdown);
            return null;
        default:
            throw new Error(`unknown command ${cmd.cmd}`);
    }
}

function replyError(id, err) {
    emit({
        event: 'reply', id,
        error: {
            code: (err && (err.rpcErrorCode || err.name)) || 'Error',
            message: (err && (err.rpcErrorMessage || err.message)) || String(err),
            details: err && err.details,
        },
    });
}

let shuttingDown = false;
async function shutdown() {
    if (shuttingDown) return;
    shuttingDown = true;
    try {
        await Promise.race([stopListening(true), new Promise((r) => setTimeout(r, 2000))]);
    } finally {
        process.exit(0);
    }
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
process.on('uncaughtException', (err) => {
    log(`uncaught exception: ${err && err.stack}`);
});
process.on('unhandledRejection', (err) => {
    log(`unhandled rejection: ${err && err.stack}`);
});

const rl = readline.createInterface({input: process.stdin});
rl.on('line', (line) => {
    line = line.trim();
    if (!line) return;
    let cmd;
    try {
        cmd = JSON.parse(line);
    } catch (e) {
        log(`bad command line: ${line}`);
        return;
    }
    handleCommand(cmd).then(
        (result) => emit({event: 'reply', id: cmd.id, result: result === undefined ? null : result}),
        (err) => replyError(cmd.id, err),
    );
});
rl.on('close', shutdown);   // parent went away

startListening().catch((err) => {
    log(`cannot listen: ${err && err.stack}`);
    process.exit(1);
});
