// Tokenizes a text with a GGUF model's own vocabulary in llama.cpp (node-llama-cpp's prebuilt CPU binaries), with
// no special tokens added, and detokenizes the tokens again. Prints two lines: the tokens as numbers separated by
// commas, then the detokenized text's UTF-8 bytes in hex.
//
//   node tokenize.mjs MODEL.gguf TEXT_AS_HEX
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, textHex] = process.argv.slice(2);
if (!modelPath || textHex === undefined) {
    console.error("usage: node tokenize.mjs MODEL.gguf TEXT_AS_HEX");
    process.exit(2);
}
const text = Buffer.from(textHex, "hex").toString("utf8");
const llama = await getLlama({gpu: false, build: "never", skipDownload: true, logLevel: LlamaLogLevel.error, progressLogs: false});
const model = await llama.loadModel({modelPath, gpuLayers: 0, useMmap: false});
const tokens = model.tokenize(text, false);
const back = model.detokenize(tokens, false);
process.stdout.write(Array.from(tokens).join(",") + "\n" + Buffer.from(back, "utf8").toString("hex") + "\n");
await model.dispose();
await llama.dispose();
