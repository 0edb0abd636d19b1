#version 330 core
// hoigen id pass: RGB = triangle index + 1 (24-bit little-endian), A = instance id (material base colour red).
struct Material {
    vec3 emissive_factor;
#ifdef USE_METALLIC_MATERIAL
    vec4 base_color_factor;
    float metallic_factor;
    float roughness_factor;
#endif
#ifdef USE_GLOSSY_MATERIAL
    vec4 diffuse_factor;
    vec3 specular_factor;
    float glossiness_factor;
#endif
};
uniform Material material;
out vec4 frag_color;

void main()
{
    uint face = uint(gl_PrimitiveID) + 1u;
#ifdef USE_METALLIC_MATERIAL
    float instance = material.base_color_factor.r;
#else
    float instance = material.diffuse_factor.r;
#endif
    frag_color = vec4(float(face & 255u), float((face >> 8) & 255u), float((face >> 16) & 255u), 0.0) / 255.0;
    frag_color.a = instance;
}
