// Evaluates a GGUF model (and optionally a LoRA adapter) with llama.cpp through node-llama-cpp's prebuilt CPU
// binaries, and prints the logits after each token of a prompt, one line per position, values separated by spaces.
// Flash attention is off and the KV cache holds F32, so that two runs differ only by their weights.
//
//   node eval.mjs MODEL.gguf ADAPTER.gguf|- TOKEN,TOKEN,...
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, adapterPath, tokenList] = process.argv.slice(2);
if (!modelPath || !adapterPath || !tokenList) {
    console.error("usage: node eval.mjs MODEL.gguf ADAPTER.gguf|- TOKEN,TOKEN,...");
    process.exit(2);
}
const tokens = tokenList.split(",").map(Number);

const llama = await getLlama({gpu: false, build: "never", skipDownload: true, logLevel: LlamaLogLevel.error, progressLogs: false});
const model = await llama.loadModel({modelPath, gpuLayers: 0, useMmap: false});
const context = await model.createContext({
    // One more cell than the tokens: node-llama-cpp decodes at most contextSize - 1 tokens before it shifts the
    // context (erases its first tokens), after which the last logits are no longer those of the sequence as given.
    contextSize: Math.max(64, tokens.length + 1),
    batchSize: Math.max(64, tokens.length + 1),
    threads: 1,
    flashAttention: false,
    experimentalKvCacheKeyType: "F32",
    experimentalKvCacheValueType: "F32",
    lora: adapterPath === "-" ? undefined : {adapters: [{filePath: adapterPath, scale: 1}]},
});
const sequence = context.getSequence();
const results = await sequence.controlledEvaluate(tokens.map((token) => [token, {generateNext: {logits: true}}]));
const lines = [];
for (let i = 0; i < tokens.length; ++i) {
    const logits = results[i]?.next?.logits;
    if (!logits) {
        console.error(`no logits for position ${i}`);
        process.exit(1);
    }
    const row = [];
    for (let t = 0; t < logits.size; ++t) row.push(logits.get(t));
    lines.push(row.join(" "));
}
process.stdout.write(lines.join("\n") + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
