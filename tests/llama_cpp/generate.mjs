// Generates tokens with llama.cpp through node-llama-cpp's prebuilt CPU binaries, for a GGUF model (and optionally a
// LoRA adapter), and prints them as numbers separated by commas. Each step evaluates the last WINDOW tokens from
// position 0 (a sliding window, as a model trained on windows of that length sees text) and picks the next token:
// the largest logit when TEMPERATURE is 0, else a draw from softmax(logits / TEMPERATURE) with a seeded generator
// (mulberry32), so that a run is reproducible. The prompt is evaluated as given: no BOS is added.
//
//   node generate.mjs MODEL.gguf ADAPTER.gguf|- TOKEN,TOKEN,... COUNT WINDOW TEMPERATURE SEED
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, adapterPath, tokenList, countText, windowText, temperatureText, seedText] = process.argv.slice(2);
if (!modelPath || !adapterPath || !tokenList || !countText || !windowText || !temperatureText || !seedText) {
    console.error("usage: node generate.mjs MODEL.gguf ADAPTER.gguf|- TOKEN,TOKEN,... COUNT WINDOW TEMPERATURE SEED");
    process.exit(2);
}
const tokens = tokenList.split(",").map(Number);
const count = Number(countText), window = Number(windowText), temperature = Number(temperatureText);
let state = Number(seedText) >>> 0;
const random = () => {  // mulberry32: a uniform draw in [0, 1)
    state = (state + 0x6D2B79F5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

const llama = await getLlama({gpu: false, build: "never", skipDownload: true, logLevel: LlamaLogLevel.error, progressLogs: false});
const model = await llama.loadModel({modelPath, gpuLayers: 0, useMmap: false});
const context = await model.createContext({
    contextSize: window + 1,  // node-llama-cpp shifts a context holding contextSize - 1 tokens (see eval.mjs)
    batchSize: window + 1,
    threads: 1,
    flashAttention: false,
    experimentalKvCacheKeyType: "F32",
    experimentalKvCacheValueType: "F32",
    lora: adapterPath === "-" ? undefined : {adapters: [{filePath: adapterPath, scale: 1}]},
});
const sequence = context.getSequence();
const text = [...tokens];
const generated = [];
for (let step = 0; step < count; ++step) {
    const input = text.slice(-window);
    await sequence.clearHistory();
    const results = await sequence.controlledEvaluate(
        input.map((token, i) => (i + 1 === input.length ? [token, {generateNext: {logits: true}}] : token)));
    const logits = results[input.length - 1]?.next?.logits;
    if (!logits) {
        console.error(`no logits at step ${step}`);
        process.exit(1);
    }
    let next = 0;
    if (temperature === 0) {
        for (let t = 1; t < logits.size; ++t) if (logits.get(t) > logits.get(next)) next = t;
    } else {
        let top = -Infinity;
        for (let t = 0; t < logits.size; ++t) top = Math.max(top, logits.get(t));
        const weights = [];
        let sum = 0;
        for (let t = 0; t < logits.size; ++t) {
            weights.push(Math.exp((logits.get(t) - top) / temperature));
            sum += weights[t];
        }
        let draw = random() * sum;
        next = logits.size - 1;
        for (let t = 0; t < logits.size; ++t) {
            draw -= weights[t];
            if (draw < 0) {
                next = t;
                break;
            }
        }
    }
    text.push(next);
    generated.push(next);
}
process.stdout.write(generated.join(",") + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
